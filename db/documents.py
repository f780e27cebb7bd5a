"""Customer documents' metadata (migration 0005): every SQL statement about a document.

The bytes are in object storage; `api/documents.py` orders the writes (row NEW, object, row ACTIVE) so
that no object is ever without its row, and a crash in between is repaired by its sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from db.customers import Conn


class DocumentStatus(StrEnum):
    NEW = "NEW"  # the row is written, the object maybe not yet
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"  # the object write failed (or a crash left it unwritten): no object
    ARCHIVED = "ARCHIVED"  # still downloadable, listed only on request
    DELETED = "DELETED"  # the object is gone; the row stays for the audit trail


# Documents a caller sees: the rest never finished, or is gone.
VISIBLE = (DocumentStatus.ACTIVE, DocumentStatus.ARCHIVED)


@dataclass(frozen=True)
class Document:
    id: str
    customer_id: str
    kind: str | None
    filename: str
    original_filename: str
    content_type: str
    size: int
    sha256: str
    object_key: str
    status: DocumentStatus
    uploaded_by: str
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    "id, customer_id, kind, filename, original_filename, content_type, size, sha256, object_key, status, "
    "uploaded_by, created_at, updated_at"
)


def _document(row: asyncpg.Record) -> Document:
    return Document(
        id=str(row["id"]),
        customer_id=str(row["customer_id"]),
        kind=row["kind"],
        filename=row["filename"],
        original_filename=row["original_filename"],
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        object_key=row["object_key"],
        status=DocumentStatus(row["status"]),
        uploaded_by=row["uploaded_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def insert_document(
    conn: Conn,
    *,
    document_id: str,
    customer_id: str,
    kind: str | None,
    filename: str,
    original_filename: str,
    content_type: str,
    size: int,
    sha256: str,
    object_key: str,
    uploaded_by: str,
) -> Document:
    """The row of an upload about to be written to object storage (NEW)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO customer_documents (id, customer_id, kind, filename, original_filename, content_type, size,
            sha256, object_key, status, uploaded_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'NEW', $10)
        RETURNING {_COLUMNS}
        """,
        document_id,
        customer_id,
        kind,
        filename,
        original_filename,
        content_type,
        size,
        sha256,
        object_key,
        uploaded_by,
    )
    assert row is not None
    return _document(row)


async def get_document(conn: Conn | asyncpg.Pool, document_id: str) -> Document | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM customer_documents WHERE id = $1", document_id)
    return None if row is None else _document(row)


async def lock_document(conn: Conn, document_id: str, *, skip_locked: bool = False) -> Document | None:
    """The row, locked for this transaction (None when missing, or locked elsewhere with `skip_locked`).

    The lock is the lease: an upload in flight holds it until its row is ACTIVE, so the sweep (which
    skips locked rows) never touches it, and a process that dies releases it with its connection."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM customer_documents WHERE id = $1 FOR UPDATE{' SKIP LOCKED' if skip_locked else ''}",
        document_id,
    )
    return None if row is None else _document(row)


async def set_status(conn: Conn, document_id: str, status: DocumentStatus) -> Document:
    row = await conn.fetchrow(
        f"UPDATE customer_documents SET status = $2, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        document_id,
        status.value,
    )
    assert row is not None
    return _document(row)


async def list_documents(pool: asyncpg.Pool, customer_id: str, *, include_archived: bool, limit: int) -> list[Document]:
    """The customer's ACTIVE documents (and ARCHIVED ones if asked), newest first."""
    statuses = [s.value for s in (VISIBLE if include_archived else (DocumentStatus.ACTIVE,))]
    rows = await pool.fetch(
        f"""
        SELECT {_COLUMNS} FROM customer_documents
        WHERE customer_id = $1 AND status = ANY($2::text[])
        ORDER BY created_at DESC, id DESC LIMIT $3
        """,
        customer_id,
        statuses,
        limit,
    )
    return [_document(row) for row in rows]


async def lease_unfinished(conn: Conn, *, older_than: timedelta, limit: int) -> list[Document]:
    """Rows left NEW for longer than `older_than` whose upload is not in flight (not locked), locked for
    this transaction; several API processes sweeping at once each get different rows."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM customer_documents
        WHERE status = 'NEW' AND created_at < now() - $1::interval
        ORDER BY created_at LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,
        older_than,
        limit,
    )
    return [_document(row) for row in rows]
