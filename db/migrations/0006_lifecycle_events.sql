-- The transactional outbox of published lifecycle events: written in the same transaction as the
-- projection and the audit row that explain them (activities.database.record_change), so there is no
-- change without its event and no event without its change.
--
-- `sequence` is per customer and gap-free (the customer's projection row is locked by the same
-- transaction, so two changes of one customer never pick the same number). `txid` orders the feed
-- (transaction order, not commit order; a consumer orders one customer's events by `sequence`):
-- a reader returns only rows of transactions older than every transaction still open (the snapshot's
-- xmin), so a row committed late is never skipped by a reader that has moved past it. Customers that
-- existed before this migration appear in the feed from their next change on (no backfill).
CREATE TABLE lifecycle_events (
    id          uuid PRIMARY KEY,
    customer_id uuid NOT NULL,
    sequence    integer NOT NULL,
    type        text NOT NULL,
    time        timestamptz NOT NULL,
    data        jsonb NOT NULL,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    position    bigserial NOT NULL,
    UNIQUE (customer_id, sequence)
);
CREATE INDEX lifecycle_events_feed ON lifecycle_events (txid, position);
