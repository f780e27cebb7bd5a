"""Customer documents: what bank staff attach to a customer, its bytes in object storage (any S3 API).

An upload is written in an order that leaves no orphan either way:

    1. the row, NEW (committed: from here on the object has a row that names it)
    2. in a second transaction that holds the row's lock (the lease): the object, then the row ACTIVE and
       the audit event; a failed write removes the object and marks the row FAILED

A process that dies between 1 and the commit of 2 releases the lock with its connection and leaves the
row NEW; the sweep (every API process runs one; `FOR UPDATE SKIP LOCKED` gives each row to one of them
and never one whose upload is still in flight) finishes it when the object is there whole (its size and
sha256 are the row's) and otherwise removes whatever is there and marks it FAILED. Deleting removes the
object, then marks the row DELETED, under the same lock.

Content types are decided from the bytes (`sniff_content_type`), never from what the client declared.
Downloads are presigned S3 URLs: the bytes never pass through the API.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import os
import re
import signal
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import asyncpg
import obstore
import structlog
from obstore.store import S3Store

import db.customers
import db.documents
import db.events
import domain.events
from api.errors import BadUserInput, Conflict, NotFound, Unavailable
from db.documents import Document, DocumentStatus
from domain.customer import OnboardingStage
from kit.settings import Settings

log = structlog.get_logger("documents")

CHUNK_BYTES = 1024 * 1024
MAX_LISTED = 200
SNIFF_BYTES = 8192
SWEEP_BATCH = 20
MAX_FILENAME_CHARS = 200
MAX_KIND_CHARS = 64
# Test hook: a real crash of the API process at one point of an upload (tests/test_documents.py);
# `after_row` (row NEW, no object) or `after_object` (object written, row still NEW).
CRASH_POINT_VARIABLE = "DOCUMENT_UPLOAD_CRASH_POINT"

KNOWN_CONTENT_TYPES = ("application/pdf", "image/png", "image/jpeg", "text/csv")
_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def sniff_content_type(head: bytes) -> str | None:
    """The content type the first bytes of a file show (PDF, PNG, JPEG by their signatures; CSV: UTF-8 text
    without control characters whose first line has a delimiter), or None."""
    for signature, content_type in _SIGNATURES:
        if head.startswith(signature):
            return content_type
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head[:SNIFF_BYTES], final=False)
    except UnicodeDecodeError:
        return None
    first_line = text.split("\n", 1)[0]
    if text and not _TEXT_CONTROL.search(text) and any(d in first_line for d in ",;\t"):
        return "text/csv"
    return None


def sanitise_filename(name: str | None) -> str:
    """A filename safe in a path, a header and a shell: the last path part, accents dropped (NFKD), only letters, digits and
    `._-` (others become `_`), no leading dot, at most 200 characters; `document` when nothing is left."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFKD", name or ""))[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base.encode("ascii", "ignore").decode()).strip("._ ")
    return cleaned[:MAX_FILENAME_CHARS] or "document"


@dataclass(frozen=True)
class DownloadLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class DocumentPolicy:
    max_bytes: int
    content_types: frozenset[str]
    link_ttl: timedelta
    sweep_after: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> DocumentPolicy:
        types = frozenset(t.strip() for t in settings.document_content_types.split(",") if t.strip())
        unknown = types - set(KNOWN_CONTENT_TYPES)
        if unknown:
            raise SystemExit(
                f"DOCUMENT_CONTENT_TYPES: cannot recognise {', '.join(sorted(unknown))} from the bytes "
                f"(known: {', '.join(KNOWN_CONTENT_TYPES)})"
            )
        return cls(
            max_bytes=settings.document_max_bytes,
            content_types=types,
            link_ttl=settings.document_link_ttl,
            sweep_after=settings.document_sweep_after,
        )


def object_store(settings: Settings) -> S3Store:
    """The bucket, over any S3 API (AWS, MinIO, SeaweedFS); path-style URLs so any endpoint works."""
    return S3Store(
        settings.s3_bucket,
        endpoint=settings.s3_endpoint,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        region=settings.s3_region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": settings.s3_endpoint.startswith("http://")},
    )


@dataclass(frozen=True)
class _Spooled:
    """An upload read once: its size, digest and content type, and the file to send on."""

    file: BinaryIO
    size: int
    sha256: str
    content_type: str | None


class DocumentService:
    """Upload, list, link, archive, delete and the repair sweep; resolvers call nothing else."""

    def __init__(self, *, pool: asyncpg.Pool, store: S3Store, policy: DocumentPolicy) -> None:
        self._pool = pool
        self._store = store
        self._policy = policy
        self._crash_point = os.environ.get(CRASH_POINT_VARIABLE)

    @property
    def policy(self) -> DocumentPolicy:
        return self._policy

    async def _spool(self, upload: Any) -> _Spooled:
        """Reads the upload (Starlette's UploadFile: a spooled temporary file, on disk past 1 MiB) once in
        chunks: size, sha256 and the content type of its first bytes; refuses it as soon as it is too large."""
        digest = hashlib.sha256()
        size = 0
        head = b""
        await upload.seek(0)
        while chunk := await upload.read(CHUNK_BYTES):
            size += len(chunk)
            if size > self._policy.max_bytes:
                raise BadUserInput(f"the file is larger than {self._policy.max_bytes} bytes", field="file")
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            digest.update(chunk)
        await upload.seek(0)
        return _Spooled(upload.file, size, digest.hexdigest(), sniff_content_type(head))

    async def upload(self, *, customer_id: str, upload: Any, kind: str | None, actor: str) -> Document:
        if kind is not None and (not kind.strip() or len(kind) > MAX_KIND_CHARS):
            raise BadUserInput(f"kind must be 1-{MAX_KIND_CHARS} characters", field="kind")
        customer = await db.customers.get_customer(self._pool, customer_id)
        if customer is None:
            raise NotFound("no customer with this id")
        if customer.erased_at is not None:
            raise Conflict("the customer was erased: it takes no documents")
        if customer.stage is OnboardingStage.CLOSED:
            raise Conflict("a closed customer takes no new documents")
        spooled = await self._spool(upload)
        if spooled.size == 0:
            raise BadUserInput("the file is empty", field="file")
        if spooled.content_type not in self._policy.content_types:
            allowed = ", ".join(sorted(self._policy.content_types))
            raise BadUserInput(f"the file's bytes are none of the accepted types ({allowed})", field="file")
        document_id = str(uuid.uuid4())
        original = str(getattr(upload, "filename", None) or "")
        async with self._pool.acquire() as conn, conn.transaction():
            # Checked again under the customer's lock, which the close and the erasure's tombstone take: an upload
            # that began before them either lands its row first (the erasure then sees it) or is refused here.
            locked = await db.customers.lock_customer(conn, customer_id)
            assert locked is not None  # customers are never deleted
            if locked.erased_at is not None:
                raise Conflict("the customer was erased: it takes no documents")
            if locked.stage is OnboardingStage.CLOSED:
                raise Conflict("a closed customer takes no new documents")
            document = await db.documents.insert_document(
                conn,
                document_id=document_id,
                customer_id=customer_id,
                kind=kind.strip() if kind else None,
                filename=sanitise_filename(original),
                original_filename=original[:1000],
                content_type=spooled.content_type,
                size=spooled.size,
                sha256=spooled.sha256,
                object_key=f"customers/{customer_id}/documents/{document_id}",
                uploaded_by=actor,
            )
        failure: Exception | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            locked_document = await db.documents.lock_document(conn, document_id)
            if locked_document is None or locked_document.status is DocumentStatus.DELETED:
                # An erasure tombstoned the row in between: its object must never be written.
                raise Conflict("the customer was erased: it takes no documents")
            if locked_document.status is not DocumentStatus.NEW:  # the orphan sweep gave up on it meanwhile
                raise Unavailable("the document could not be stored; nothing was kept, retry")
            self._maybe_crash("after_row")
            try:
                await obstore.put_async(
                    self._store,
                    document.object_key,
                    spooled.file,
                    attributes={
                        "Content-Type": document.content_type,
                        "Content-Disposition": f'attachment; filename="{document.filename}"',
                    },
                )
                self._maybe_crash("after_object")
            except Exception as exc:  # the write failed: no object, the row FAILED (committed), then raised
                failure = exc
                await self._discard_object(document)
                await db.documents.set_status(conn, document_id, DocumentStatus.FAILED)
            else:
                document = await db.documents.set_status(conn, document_id, DocumentStatus.ACTIVE)
                await self._audit(conn, document, "uploaded", actor=actor)
        if failure is not None:
            log.warning("document upload failed", document_id=document_id, error=repr(failure))
            raise Unavailable("the document could not be stored; nothing was kept, retry") from failure
        log.info("document uploaded", document_id=document_id, customer_id=customer_id, size=document.size)
        return document

    def _maybe_crash(self, point: str) -> None:
        if self._crash_point == point:
            os.kill(os.getpid(), signal.SIGKILL)

    async def get(self, document_id: str) -> Document | None:
        document = await db.documents.get_document(self._pool, document_id)
        return document if document is not None and document.status in db.documents.VISIBLE else None

    async def list(self, customer_id: str, *, include_archived: bool) -> list[Document]:
        return await db.documents.list_documents(
            self._pool, customer_id, include_archived=include_archived, limit=MAX_LISTED
        )

    async def link(self, document: Document, *, actor: str) -> DownloadLink:
        """A presigned GET URL of the object, valid for the link TTL; the link is an audit event."""
        expires_at = datetime.now(UTC) + self._policy.link_ttl
        url = await obstore.sign_async(self._store, "GET", document.object_key, self._policy.link_ttl)
        async with self._pool.acquire() as conn:
            await self._audit(
                conn, document, "link_created", actor=actor, details={"expires_at": expires_at.isoformat()}
            )
        return DownloadLink(url=url, expires_at=expires_at)

    async def archive(self, document_id: str, *, actor: str) -> Document:
        async with self._pool.acquire() as conn, conn.transaction():
            document = await self._locked_visible(conn, document_id)
            if document.status is DocumentStatus.ARCHIVED:
                return document
            document = await db.documents.set_status(conn, document_id, DocumentStatus.ARCHIVED)
            await self._audit(conn, document, "archived", actor=actor)
            return document

    async def delete(self, document_id: str, *, actor: str) -> Document:
        """Removes the object, then marks the row DELETED (a crash between leaves a row a retry deletes)."""
        async with self._pool.acquire() as conn, conn.transaction():
            document = await self._locked_visible(conn, document_id)
            await obstore.delete_async(self._store, document.object_key)
            document = await db.documents.set_status(conn, document_id, DocumentStatus.DELETED)
            await self._audit(conn, document, "deleted", actor=actor)
        log.info("document deleted", document_id=document_id, customer_id=document.customer_id)
        return document

    async def _locked_visible(self, conn: Any, document_id: str) -> Document:
        document = await db.documents.lock_document(conn, document_id)
        if document is None or document.status not in db.documents.VISIBLE:
            raise NotFound("no document with this id")
        return document

    async def _audit(
        self, conn: Any, document: Document, action: str, *, actor: str, details: dict[str, Any] | None = None
    ) -> None:
        """The audit row and, for a change the rest of the bank is told of, its published event (the outbox)."""
        suffix = f":{uuid.uuid4()}" if action == "link_created" else ""  # every link is its own event
        event_type, key, now = f"document.{action}", f"document:{document.id}:{action}{suffix}", datetime.now(UTC)
        details = {
            "document_id": document.id,
            "filename": document.filename,
            "content_type": document.content_type,
            "size": document.size,
            "sha256": document.sha256,
            "kind": document.kind,
            **(details or {}),
        }
        published = domain.events.published_type(event_type, details)
        # The customer's row lock first: it keeps the customer's event sequence gap-free (db.events.append).
        customer = await db.customers.lock_customer(conn, document.customer_id) if published else None
        inserted = await db.customers.append_event(
            conn,
            customer_id=document.customer_id,
            event_type=event_type,
            actor=actor,
            details=details,
            occurred_at=now,
            workflow_id=None,
            run_id=None,
            idempotency_key=key,
        )
        if inserted and published and customer is not None:
            await db.events.append(
                conn,
                customer_id=document.customer_id,
                type=published,
                time=now,
                data=domain.events.event_data(customer, event_type, details),
                idempotency_key=key,
            )

    async def _discard_object(self, document: Document) -> None:
        with contextlib.suppress(Exception):  # best effort: the sweep never sees a FAILED row's object again
            await obstore.delete_async(self._store, document.object_key)

    # --- the sweep --------------------------------------------------------------------------------

    async def _object_digest(self, key: str) -> tuple[int, str] | None:
        try:
            result = await obstore.get_async(self._store, key)
        except FileNotFoundError:
            return None
        digest = hashlib.sha256()
        size = 0
        async for chunk in result.stream():
            size += len(chunk)
            digest.update(chunk)
        return size, digest.hexdigest()

    async def sweep(self) -> int:
        """Finishes or cleans uploads left NEW (their process died); returns how many rows it settled."""
        settled = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for document in await db.documents.lease_unfinished(
                conn, older_than=self._policy.sweep_after, limit=SWEEP_BATCH
            ):
                found = await self._object_digest(document.object_key)
                if found == (document.size, document.sha256):
                    finished = await db.documents.set_status(conn, document.id, DocumentStatus.ACTIVE)
                    await self._audit(
                        conn, finished, "uploaded", actor=document.uploaded_by, details={"repaired": True}
                    )
                    log.info("unfinished document upload finished", document_id=document.id)
                else:
                    if found is not None:
                        await obstore.delete_async(self._store, document.object_key)
                    await db.documents.set_status(conn, document.id, DocumentStatus.FAILED)
                    log.info("unfinished document upload cleaned", document_id=document.id)
                settled += 1
        return settled

    async def run_sweeps(self) -> None:
        """Sweeps until cancelled, as often as the sweep's age threshold (at most every 30 s)."""
        interval = min(max(self._policy.sweep_after.total_seconds(), 0.5), 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001  (the sweep must outlive any failure; it runs again)
                log.warning("document sweep failed", error=repr(exc))
