-- Compliance requests under four eyes (domain/four_eyes.py): one officer requests, another confirms or any
-- rejects. `requested_by` and `decided_by` are the officers' token subjects (who they are), the *_actor
-- columns the clients they used. `executed_at`: when the confirmed decision was carried out (an erasure
-- spans Keycloak, Sumsub, the object store and PostgreSQL; a confirmed request not yet executed is resumed).
-- At most one request of a kind is pending per customer (an expired one is marked EXPIRED first).
CREATE TABLE four_eyes_requests (
    id                uuid PRIMARY KEY,
    customer_id       uuid NOT NULL REFERENCES customers (id),
    kind              text NOT NULL CHECK (kind IN ('OVERRIDE_APPROVE', 'OVERRIDE_DECLINE', 'ERASE')),
    state             text NOT NULL CHECK (state IN ('PENDING', 'CONFIRMED', 'REJECTED', 'EXPIRED')),
    reason            text NOT NULL,
    requested_by      text NOT NULL,
    requested_by_actor text NOT NULL,
    requested_at      timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    decided_by        text,
    decided_by_actor  text,
    decided_at        timestamptz,
    decision_reason   text,
    executed_at       timestamptz
);
CREATE UNIQUE INDEX four_eyes_requests_one_pending ON four_eyes_requests (customer_id, kind) WHERE state = 'PENDING';
CREATE INDEX four_eyes_requests_customer ON four_eyes_requests (customer_id, requested_at DESC);
