-- Seed tables from lifecycle.md, the customer projection, deposit accounts, the append-only event log
-- and the Sumsub webhook inbox.

CREATE TABLE customer_types (
    customer_type    text PRIMARY KEY,
    description      text NOT NULL,
    account_category text NOT NULL,
    verification_flow text NOT NULL CHECK (verification_flow IN ('KYC', 'KYB'))
);

CREATE TABLE customer_statuses (
    status  text PRIMARY KEY,
    meaning text NOT NULL
);

CREATE TABLE customers (
    id                  uuid PRIMARY KEY,
    email               text NOT NULL,
    email_normalized    text NOT NULL UNIQUE,
    customer_type       text NOT NULL REFERENCES customer_types,
    telegram_handle     text UNIQUE,
    status              text NOT NULL REFERENCES customer_statuses,
    kyc_status          text NOT NULL,
    kyc_level           text NOT NULL,
    onboarding_stage    text NOT NULL,
    keycloak_user_id    text,
    sumsub_applicant_id text,
    verification_url    text,
    moderation_comment  text,
    suspension_reason   text,
    last_error          text,
    current_step        text,
    next_reminder_at    timestamptz,
    expires_at          timestamptz,
    workflow_id         text NOT NULL,
    run_id              text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX customers_created_at_id ON customers (created_at, id);

CREATE TABLE deposit_accounts (
    id          uuid PRIMARY KEY,
    customer_id uuid NOT NULL UNIQUE REFERENCES customers,
    category    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('ACTIVE', 'FROZEN', 'CLOSED')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Append-only: every state change of a customer. idempotency_key makes a retried activity write once.
CREATE TABLE customer_events (
    id              bigserial PRIMARY KEY,
    customer_id     uuid NOT NULL,
    event_type      text NOT NULL,
    actor           text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    occurred_at     timestamptz NOT NULL,
    workflow_id     text,
    run_id          text,
    idempotency_key text NOT NULL UNIQUE
);
CREATE INDEX customer_events_customer ON customer_events (customer_id, occurred_at DESC, id DESC);

-- A Sumsub webhook is answered 200 only once it is here; the relay delivers what is not delivered yet.
CREATE TABLE sumsub_webhook_inbox (
    id               bigserial PRIMARY KEY,
    dedupe_key       text NOT NULL UNIQUE,
    event_type       text NOT NULL,
    external_user_id text,
    applicant_id     text,
    payload          jsonb NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    outcome          text,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text
);
CREATE INDEX sumsub_webhook_inbox_pending ON sumsub_webhook_inbox (id) WHERE delivered_at IS NULL;

INSERT INTO customer_types (customer_type, description, account_category, verification_flow) VALUES
    ('INDIVIDUAL', 'Natural person', 'INDIVIDUAL', 'KYC'),
    ('GOVERNMENT_ENTITY', 'Government organization', 'GOVERNMENT', 'KYB'),
    ('PRIVATE_COMPANY', 'Private corporation', 'BUSINESS', 'KYB'),
    ('BANK', 'Banking institution', 'INTERBANK', 'KYB'),
    ('FINANCIAL_INSTITUTION', 'Financial services company', 'INSTITUTIONAL', 'KYB'),
    ('FOREIGN_AGENCY_OR_SUBSIDIARY', 'Foreign agency/subsidiary', 'FOREIGN', 'KYB'),
    ('NON_DOMICILED_COMPANY', 'Non-domiciled corporation', 'NON_RESIDENT', 'KYB');

INSERT INTO customer_statuses (status, meaning) VALUES
    ('INACTIVE', 'cannot operate: onboarding not finished, KYC declined or expired, or the customer was closed'),
    ('ACTIVE', 'can operate: KYC approved and a deposit account is open'),
    ('SUSPENDED', 'was active, blocked by ops or by a later negative KYC review');
