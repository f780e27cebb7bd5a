"""The outbox of published lifecycle events (migration 0006) and the feed that reads it in commit order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db.customers import Conn

# Event ids are derived from the change that caused them (its audit idempotency key): the same change can
# only ever carry the same id, which is what a consumer deduplicates on.
_EVENT_ID_NAMESPACE = uuid.UUID("7b0f3c8e-5d1a-4b7e-9c2f-1e6a8d4b3c90")


@dataclass(frozen=True)
class LifecycleEvent:
    id: str
    customer_id: str
    sequence: int
    type: str
    time: datetime
    data: dict[str, Any]
    cursor: tuple[int, int]  # (txid, position): where a reader continues after this event


def event_id(idempotency_key: str) -> str:
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, idempotency_key))


DELIVERIES_CHANNEL = "event_deliveries"  # NOTIFY payload: a subscription id with new deliveries


async def append(
    conn: Conn, *, customer_id: str, type: str, time: datetime, data: dict[str, Any], idempotency_key: str
) -> None:
    """Adds the event in the caller's transaction, which must hold the customer's projection row lock, with a
    delivery for every enabled subscription that wants its type; the subscriptions' delivery workflows are
    told on commit (NOTIFY is transactional; a lost notice is caught up by the delivery workflow's own timer)."""
    await conn.execute(
        """
        WITH event AS (
            INSERT INTO lifecycle_events (id, customer_id, sequence, type, time, data)
            VALUES ($1, $2, (SELECT coalesce(max(sequence), 0) + 1 FROM lifecycle_events WHERE customer_id = $2),
                    $3, $4, $5)
            ON CONFLICT (id) DO NOTHING
            RETURNING id, type
        ), deliveries AS (
            INSERT INTO event_deliveries (subscription_id, event_id)
            SELECT s.id, event.id FROM event JOIN event_subscriptions s
                ON s.enabled AND (cardinality(s.event_types) = 0 OR event.type = ANY(s.event_types))
            RETURNING subscription_id
        )
        SELECT pg_notify($6, subscription_id::text) FROM deliveries
        """,
        event_id(idempotency_key),
        customer_id,
        type,
        time,
        data,
        DELIVERIES_CHANNEL,
    )


async def feed(
    pool: asyncpg.Pool, *, after: tuple[int, int] | None, types: list[str] | None, limit: int
) -> list[LifecycleEvent]:
    """Events in transaction-id order past `after`, only of transactions older than any still running (the
    snapshot's xmin): a transaction that commits after a younger one is still read, never skipped."""
    txid, position = after or (0, 0)
    rows = await pool.fetch(
        """
        SELECT id, customer_id, sequence, type, time, data, txid::text::bigint AS txid, position
        FROM lifecycle_events
        WHERE (txid, position) > ($1::text::xid8, $2)
          AND txid < pg_snapshot_xmin(pg_current_snapshot())
          AND ($3::text[] IS NULL OR type = ANY($3::text[]))
        ORDER BY txid, position
        LIMIT $4
        """,
        str(txid),
        position,
        types,
        limit,
    )
    return [
        LifecycleEvent(
            id=str(row["id"]),
            customer_id=str(row["customer_id"]),
            sequence=row["sequence"],
            type=row["type"],
            time=row["time"],
            data=row["data"],
            cursor=(row["txid"], row["position"]),
        )
        for row in rows
    ]
