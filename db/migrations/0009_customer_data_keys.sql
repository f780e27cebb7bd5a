-- Each customer's own payload key (crypto-shredding, issue 12): a random AES-256 key, stored only wrapped
-- (AES-GCM under the PAYLOAD_ENCRYPTION_KEYS master key `master_key_id`, the key id as associated data).
-- `key_id` travels in every payload the key sealed, so the codec server decodes without knowing the
-- workflow. Erasure sets `wrapped_key` NULL and `shredded_at`: the row stays, so a payload of an erased
-- customer fails as "erased" (not "unknown key"), and nothing is ever sealed for that customer again.
CREATE TABLE customer_data_keys (
    key_id        text PRIMARY KEY,
    customer_id   uuid NOT NULL UNIQUE,
    master_key_id text,
    wrapped_key   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    shredded_at   timestamptz,
    CHECK ((wrapped_key IS NULL) = (shredded_at IS NOT NULL)),
    CHECK ((wrapped_key IS NULL) = (master_key_id IS NULL))
);
