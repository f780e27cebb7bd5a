"""The Sumsub webhook inbox: a webhook is answered 200 only once it is stored here; the relay delivers it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg


async def store_webhook(
    pool: asyncpg.Pool, *, dedupe_key: str, payload: dict[str, Any], outcome: str | None = None
) -> int | None:
    """Stores a webhook durably; returns its inbox id, or None when it is a duplicate already stored.
    A row stored with an outcome needs no delivery (e.g. rejected after authentication); one without is
    pending until a relay delivers it."""
    return await pool.fetchval(
        """
        INSERT INTO sumsub_webhook_inbox (dedupe_key, event_type, external_user_id, applicant_id, payload,
            outcome, delivered_at)
        VALUES ($1, $2, $3, $4, $5, $6::text, CASE WHEN $6::text IS NULL THEN NULL ELSE now() END)
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id
        """,
        dedupe_key,
        str(payload.get("type") or "invalid"),
        payload.get("externalUserId") if isinstance(payload.get("externalUserId"), str) else None,
        payload.get("applicantId") if isinstance(payload.get("applicantId"), str) else None,
        payload,
        outcome,
    )


# A failed delivery is tried again after 5 s, then 10, 20, 40 and every 60 s: a row that keeps failing is not
# taken by every drain (it would hold up the rows behind it), and after an outage the backlog waits 60 s at most.
RETRY_FIRST_SECONDS = 5
RETRY_MAX_SECONDS = 60


async def mark_webhooks(
    pool: asyncpg.Pool, inbox_ids: list[int], *, outcome: str | None, error: str | None = None
) -> None:
    """Records a delivery attempt: with an outcome the rows are done; without one they stay pending, and no relay
    takes them again before their retry time (RETRY_FIRST_SECONDS, doubling with each attempt, RETRY_MAX_SECONDS)."""
    await pool.execute(
        """
        UPDATE sumsub_webhook_inbox
        SET attempts = attempts + 1, outcome = $2::text, last_error = $3,
            delivered_at = CASE WHEN $2::text IS NULL THEN NULL ELSE now() END,
            leased_until = CASE WHEN $2::text IS NULL
                THEN now() + make_interval(secs => least($4 * power(2, least(attempts, 16)), $5)) END
        WHERE id = ANY($1::bigint[])
        """,
        inbox_ids,
        outcome,
        error,
        RETRY_FIRST_SECONDS,
        RETRY_MAX_SECONDS,
    )


NO_WORKFLOW_OUTCOME = "no_running_workflow"


async def settle_without_workflow(pool: asyncpg.Pool, inbox_ids: list[int], *, error: str) -> None:
    """Settles webhooks no workflow takes (no such customer, or its workflow has finished); kept for ops."""
    await mark_webhooks(pool, inbox_ids, outcome=NO_WORKFLOW_OUTCOME, error=error)


async def existing_customers(pool: asyncpg.Pool, customer_ids: list[str]) -> set[str]:
    """Which of these ids belong to a customer row, erased ones included, however the UUID is spelled (as
    PostgreSQL reads it: upper case, braces, no hyphens); malformed ones never."""
    parsed: dict[str, uuid.UUID] = {}
    for customer_id in customer_ids:
        try:
            parsed[customer_id] = uuid.UUID(customer_id)
        except ValueError:
            continue
    if not parsed:
        return set()
    rows = await pool.fetch("SELECT id FROM customers WHERE id = ANY($1::uuid[])", list(set(parsed.values())))
    found = {row["id"] for row in rows}
    return {customer_id for customer_id, value in parsed.items() if value in found}


# What an erased customer's webhook keeps: its type and the fact (its body may hold personal data).
_TOMBSTONE_SQL = "jsonb_build_object('type', event_type, 'erased', true)"
ERASED_OUTCOME = "customer_erased"


def is_tombstone(payload: object) -> bool:
    """Whether a stored body is what `settle_erased` (or an erasure) left of it."""
    return isinstance(payload, dict) and payload.get("erased") is True


async def settle_erased(pool: asyncpg.Pool, inbox_ids: list[int]) -> None:
    """Settles webhooks about an erased customer: no workflow takes them, and only a tombstone of each body stays."""
    await pool.execute(
        f"""
        UPDATE sumsub_webhook_inbox
        SET attempts = attempts + 1, outcome = $2, last_error = NULL, payload = {_TOMBSTONE_SQL},
            delivered_at = now(), leased_until = NULL
        WHERE id = ANY($1::bigint[])
        """,
        inbox_ids,
        ERASED_OUTCOME,
    )


async def is_erased(pool: asyncpg.Pool, customer_id: str) -> bool:
    """Whether the customer was erased (False for an unknown or malformed id)."""
    try:
        return bool(
            await pool.fetchval(
                "SELECT state->>'erased_at' IS NOT NULL FROM customers WHERE id = $1::uuid", customer_id
            )
        )
    except asyncpg.DataError:
        return False


async def lease_pending_webhooks(pool: asyncpg.Pool, *, lease_seconds: float, limit: int = 100) -> list[asyncpg.Record]:
    """Takes the lease of up to `limit` undelivered webhooks nobody holds, oldest first. Rows another
    sweep is taking at this moment are skipped (SKIP LOCKED), and rows it took carry its lease, so
    concurrent sweeps (of several workers' relays) never take the same row. A row waiting for its retry time
    (mark_webhooks) is leased until then."""
    rows = await pool.fetch(
        """
        UPDATE sumsub_webhook_inbox SET leased_until = now() + make_interval(secs => $2)
        WHERE id IN (
            SELECT id FROM sumsub_webhook_inbox
            WHERE delivered_at IS NULL AND (leased_until IS NULL OR leased_until < now())
            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
        )
        RETURNING id, dedupe_key, payload, received_at
        """,
        limit,
        lease_seconds,
    )
    return sorted(rows, key=lambda row: row["id"])


@dataclass(frozen=True)
class InboxEntry:
    """A stored webhook as ops see it (its payload stays in the database: it may hold personal data)."""

    id: int
    dedupe_key: str
    event_type: str
    external_user_id: str | None
    payload: dict[str, Any]
    received_at: datetime
    outcome: str | None
    attempts: int
    last_error: str | None


_WEBHOOK_COLUMNS = ", ".join(field.name for field in fields(InboxEntry))


async def undeliverable_webhooks(pool: asyncpg.Pool, *, limit: int = 50) -> list[InboxEntry]:
    """Stored webhooks ops may need to look at: no workflow took them, they were refused, or delivery
    keeps failing. Newest first."""
    rows = await pool.fetch(
        f"""
        SELECT {_WEBHOOK_COLUMNS} FROM sumsub_webhook_inbox
        WHERE outcome IS DISTINCT FROM 'delivered' AND (outcome IS NOT NULL OR attempts > 0)
        ORDER BY id DESC LIMIT $1
        """,
        limit,
    )
    return [InboxEntry(**row) for row in rows]


async def get_webhook(pool: asyncpg.Pool, inbox_id: int) -> InboxEntry | None:
    row = await pool.fetchrow(f"SELECT {_WEBHOOK_COLUMNS} FROM sumsub_webhook_inbox WHERE id = $1", inbox_id)
    return None if row is None else InboxEntry(**row)


async def webhooks_for_customer(
    pool: asyncpg.Pool, customer_id: str, applicant_id: str | None, *, limit: int = 10_000
) -> list[InboxEntry]:
    """Every stored Sumsub webhook about a customer (by our id or its applicant's), oldest first (the export)."""
    rows = await pool.fetch(
        f"""
        SELECT {_WEBHOOK_COLUMNS} FROM sumsub_webhook_inbox
        WHERE external_user_id = $1 OR (applicant_id IS NOT NULL AND applicant_id = $2)
        ORDER BY id LIMIT $3
        """,
        customer_id,
        applicant_id,
        limit,
    )
    return [InboxEntry(**row) for row in rows]
