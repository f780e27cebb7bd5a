-- What bank staff attach to a customer. The bytes live in object storage (S3) under `object_key`; this row
-- is written first (NEW), the object second, then the row becomes ACTIVE (FAILED when the write failed), so
-- an object never exists without its row. A row left NEW by a crash is finished or cleaned by the sweep
-- (api/documents.py). Deleting removes the object, then marks the row DELETED (kept for the audit trail).

CREATE TABLE customer_documents (
    id                uuid PRIMARY KEY,
    customer_id       uuid NOT NULL REFERENCES customers,
    kind              text,
    filename          text NOT NULL,  -- sanitised: what the download is called
    original_filename text NOT NULL,  -- as the uploader's client sent it (metadata only)
    content_type      text NOT NULL,  -- decided from the bytes, never the declared type
    size              bigint NOT NULL CHECK (size >= 0),
    sha256            text NOT NULL,
    object_key        text NOT NULL UNIQUE,
    status            text NOT NULL CHECK (status IN ('NEW', 'ACTIVE', 'FAILED', 'ARCHIVED', 'DELETED')),
    uploaded_by       text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_documents_customer ON customer_documents (customer_id, created_at DESC);
-- The sweep looks only at uploads that never finished.
CREATE INDEX customer_documents_unfinished ON customer_documents (created_at) WHERE status = 'NEW';
