-- The projection as one document. `state` holds the workflow's CustomerState as JSON, which is what the
-- API reads back; the columns the API and ops filter, sort or look up by are generated from it, so they
-- cannot disagree with it, and a new field of the state needs no new column (README: "Adding a field").
-- Timestamps stay plain columns: a text-to-timestamptz cast is not immutable, so it cannot be generated.

ALTER TABLE customers ADD COLUMN state jsonb;
UPDATE customers SET state = jsonb_build_object(
    'registration', jsonb_build_object(
        'customer_id', id::text, 'email', email_normalized, 'customer_type', customer_type,
        'telegram_handle', telegram_handle),
    'status', status, 'kyc_status', kyc_status, 'kyc_level', kyc_level, 'stage', onboarding_stage,
    'keycloak_user_id', keycloak_user_id, 'applicant_id', sumsub_applicant_id,
    'verification_url', verification_url, 'moderation_comment', moderation_comment,
    'suspension_reason', suspension_reason, 'last_error', last_error, 'current_step', current_step,
    'next_reminder_at', next_reminder_at, 'expires_at', expires_at,
    'created_at', created_at, 'updated_at', updated_at);
ALTER TABLE customers ALTER COLUMN state SET NOT NULL;

-- Dropping a column drops its indexes and constraints; they are made again on the generated columns.
ALTER TABLE customers
    DROP COLUMN email, DROP COLUMN email_normalized, DROP COLUMN customer_type, DROP COLUMN telegram_handle,
    DROP COLUMN status, DROP COLUMN kyc_status, DROP COLUMN kyc_level, DROP COLUMN onboarding_stage,
    DROP COLUMN keycloak_user_id, DROP COLUMN sumsub_applicant_id, DROP COLUMN verification_url,
    DROP COLUMN moderation_comment, DROP COLUMN suspension_reason, DROP COLUMN last_error,
    DROP COLUMN current_step, DROP COLUMN next_reminder_at, DROP COLUMN expires_at;

-- The email is stored normalised (domain.customer.normalise_email), so its uniqueness is the customer's.
ALTER TABLE customers
    ADD COLUMN email text GENERATED ALWAYS AS (state #>> '{registration,email}') STORED NOT NULL UNIQUE,
    ADD COLUMN customer_type text GENERATED ALWAYS AS (state #>> '{registration,customer_type}') STORED NOT NULL
        REFERENCES customer_types,
    ADD COLUMN telegram_handle text GENERATED ALWAYS AS (state #>> '{registration,telegram_handle}') STORED UNIQUE,
    ADD COLUMN status text GENERATED ALWAYS AS (state ->> 'status') STORED NOT NULL REFERENCES customer_statuses,
    ADD COLUMN kyc_status text GENERATED ALWAYS AS (state ->> 'kyc_status') STORED NOT NULL,
    ADD COLUMN onboarding_stage text GENERATED ALWAYS AS (state ->> 'stage') STORED NOT NULL,
    ADD COLUMN keycloak_user_id text GENERATED ALWAYS AS (state ->> 'keycloak_user_id') STORED,
    ADD COLUMN sumsub_applicant_id text GENERATED ALWAYS AS (state ->> 'applicant_id') STORED;

-- The indexes of 0002 (keyset pagination per filter, `me`), on the generated columns.
CREATE INDEX customers_status_created_at_id ON customers (status, created_at, id);
CREATE INDEX customers_customer_type_created_at_id ON customers (customer_type, created_at, id);
CREATE INDEX customers_kyc_status_created_at_id ON customers (kyc_status, created_at, id);
CREATE INDEX customers_onboarding_stage_created_at_id ON customers (onboarding_stage, created_at, id);
CREATE INDEX customers_keycloak_user_id ON customers (keycloak_user_id) WHERE keycloak_user_id IS NOT NULL;
