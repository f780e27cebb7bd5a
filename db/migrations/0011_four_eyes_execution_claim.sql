-- A confirmed request is carried out by one confirmation at a time: `executing_since` is claimed (in the
-- transaction that reads the request FOR UPDATE) before the side effects start and cleared when they stop.
-- A claim older than the API's EXECUTION_CLAIM (a process that died mid-way) may be taken over.
ALTER TABLE four_eyes_requests ADD COLUMN executing_since timestamptz;
