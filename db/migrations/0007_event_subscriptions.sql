-- Webhook subscriptions to the published lifecycle events (the push side of the outbox, 0006).
--
-- A delivery is one event owed to one subscription, created in the transaction that writes the event
-- (db.events.append), so a committed event always has its deliveries and an event never committed has
-- none. Every attempt is kept for ops. The signing secrets are stored as they are: the receiver holds the
-- same symmetric key (Standard Webhooks' HMAC scheme), so it cannot be a hash.
CREATE TABLE event_subscriptions (
    id                         uuid PRIMARY KEY,
    url                        text NOT NULL,
    event_types                text[] NOT NULL,  -- empty: every type
    description                text NOT NULL DEFAULT '',
    enabled                    boolean NOT NULL DEFAULT true,
    disabled_reason            text,
    secret                     text NOT NULL,
    previous_secret            text,             -- still signed with until previous_secret_expires_at
    previous_secret_expires_at timestamptz,
    failing_since              timestamptz,      -- the first failure since the last success
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL
);

CREATE TABLE event_deliveries (
    id              bigserial PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES event_subscriptions (id) ON DELETE CASCADE,
    event_id        uuid NOT NULL REFERENCES lifecycle_events (id),
    status          text NOT NULL DEFAULT 'PENDING',  -- PENDING, RETRYING, DELIVERED, DEAD
    round_attempts  integer NOT NULL DEFAULT 0,       -- attempts since created or last replayed: the schedule's index
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (subscription_id, event_id)
);
-- What a delivery round asks for: the due deliveries of one subscription, oldest first.
CREATE INDEX event_deliveries_due ON event_deliveries (subscription_id, next_attempt_at, id)
    WHERE status IN ('PENDING', 'RETRYING');

CREATE TABLE event_delivery_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES event_deliveries (id) ON DELETE CASCADE,
    attempted_at  timestamptz NOT NULL,
    status_code   integer,          -- null: no HTTP answer (timeout, refused, address not allowed)
    latency_ms    integer NOT NULL,
    response_head text NOT NULL DEFAULT '',
    error         text
);
CREATE INDEX event_delivery_attempts_delivery ON event_delivery_attempts (delivery_id, id);
