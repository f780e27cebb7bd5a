-- A lease on each undelivered webhook, so that several API processes (API_WORKERS, replicas) deliver each
-- once: the process that stores a webhook holds it first (its own queue delivers it); once a lease has run
-- out, a sweep takes the row with FOR UPDATE SKIP LOCKED and holds it while it delivers. NULL: anyone's.
ALTER TABLE sumsub_webhook_inbox ADD COLUMN leased_until timestamptz;
