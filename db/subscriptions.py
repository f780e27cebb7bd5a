"""Webhook subscriptions, the deliveries owed to them and every attempt (migration 0007)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from db.customers import Conn
from domain.deliveries import DUE_STATUSES, Attempt, DeliveryStatus, NextAttempt

_SUBSCRIPTION_COLUMNS = """
    id, url, event_types, description, enabled, disabled_reason, secret, previous_secret,
    previous_secret_expires_at, failing_since, created_at, updated_at
"""


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    event_types: list[str]  # empty: every type
    description: str
    enabled: bool
    disabled_reason: str | None
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, and the previous one while its grace period lasts (receivers may hold either)."""
        expires = self.previous_secret_expires_at
        still_valid = self.previous_secret is not None and expires is not None and now < expires
        return [self.secret, *([self.previous_secret] if still_valid and self.previous_secret else [])]


@dataclass(frozen=True)
class Delivery:
    id: int
    subscription_id: str
    event_id: str
    event_type: str
    customer_id: str
    sequence: int
    status: DeliveryStatus
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class DueDelivery:
    """A delivery to attempt now, with the event it carries."""

    id: int
    round_attempts: int
    event_id: str
    customer_id: str
    sequence: int
    type: str
    time: datetime
    data: dict[str, Any]


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(
        id=str(row["id"]),
        url=row["url"],
        event_types=list(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        failing_since=row["failing_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create_subscription(
    conn: Conn, *, id: str, url: str, event_types: list[str], description: str, secret: str, now: datetime
) -> Subscription:
    row = await conn.fetchrow(
        f"""
        INSERT INTO event_subscriptions (id, url, event_types, description, secret, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        RETURNING {_SUBSCRIPTION_COLUMNS}
        """,
        id,
        url,
        event_types,
        description,
        secret,
        now,
    )
    assert row is not None
    return _subscription(row)


async def get_subscription(conn: Conn, subscription_id: str) -> Subscription | None:
    row = await conn.fetchrow(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE id = $1", subscription_id)
    return None if row is None else _subscription(row)


async def list_subscriptions(conn: Conn) -> list[Subscription]:
    rows = await conn.fetch(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM event_subscriptions ORDER BY created_at, id")
    return [_subscription(row) for row in rows]


async def enabled_subscription_ids(conn: Conn) -> list[str]:
    return [str(row["id"]) for row in await conn.fetch("SELECT id FROM event_subscriptions WHERE enabled")]


async def update_subscription(
    conn: Conn,
    subscription_id: str,
    *,
    now: datetime,
    url: str | None = None,
    event_types: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> Subscription | None:
    """Changes what is given; enabling forgets why it was disabled and since when it was failing."""
    row = await conn.fetchrow(
        f"""
        UPDATE event_subscriptions SET
            url = coalesce($2, url),
            event_types = coalesce($3, event_types),
            description = coalesce($4, description),
            enabled = coalesce($5, enabled),
            disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason ELSE NULL END,
            failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END,
            updated_at = $6
        WHERE id = $1
        RETURNING {_SUBSCRIPTION_COLUMNS}
        """,
        subscription_id,
        url,
        event_types,
        description,
        enabled,
        now,
    )
    return None if row is None else _subscription(row)


async def rotate_secret(
    conn: Conn, subscription_id: str, *, secret: str, previous_valid_until: datetime, now: datetime
) -> Subscription | None:
    row = await conn.fetchrow(
        f"""
        UPDATE event_subscriptions SET
            previous_secret = secret, previous_secret_expires_at = $3, secret = $2, updated_at = $4
        WHERE id = $1
        RETURNING {_SUBSCRIPTION_COLUMNS}
        """,
        subscription_id,
        secret,
        previous_valid_until,
        now,
    )
    return None if row is None else _subscription(row)


async def delete_subscription(conn: Conn, subscription_id: str) -> bool:
    """Deletes it with its deliveries and their attempts."""
    return await conn.fetchval("DELETE FROM event_subscriptions WHERE id = $1 RETURNING true", subscription_id) is True


# --- delivering -------------------------------------------------------------------------------------------


async def due_deliveries(conn: Conn, subscription_id: str, *, limit: int) -> list[DueDelivery]:
    rows = await conn.fetch(
        """
        SELECT d.id, d.round_attempts, e.id AS event_id, e.customer_id, e.sequence, e.type, e.time, e.data
        FROM event_deliveries d JOIN lifecycle_events e ON e.id = d.event_id
        WHERE d.subscription_id = $1 AND d.status = ANY($2::text[]) AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at, d.id
        LIMIT $3
        """,
        subscription_id,
        list(DUE_STATUSES),
        limit,
    )
    return [
        DueDelivery(
            id=row["id"],
            round_attempts=row["round_attempts"],
            event_id=str(row["event_id"]),
            customer_id=str(row["customer_id"]),
            sequence=row["sequence"],
            type=row["type"],
            time=row["time"],
            data=row["data"],
        )
        for row in rows
    ]


async def next_due_at(conn: Conn, subscription_id: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT min(next_attempt_at) FROM event_deliveries WHERE subscription_id = $1 AND status = ANY($2::text[])",
        subscription_id,
        list(DUE_STATUSES),
    )
    return value


async def record_attempt(conn: Conn, delivery_id: int, attempt: Attempt, then: NextAttempt) -> None:
    """The attempt and what follows it, in one transaction (the caller's)."""
    await conn.execute(
        """
        INSERT INTO event_delivery_attempts (delivery_id, attempted_at, status_code, latency_ms, response_head, error)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        delivery_id,
        attempt.attempted_at,
        attempt.status_code,
        attempt.latency_ms,
        attempt.response_head,
        attempt.error,
    )
    await conn.execute(
        """
        UPDATE event_deliveries SET
            status = $2,
            round_attempts = round_attempts + 1,
            next_attempt_at = coalesce($3, next_attempt_at),
            delivered_at = CASE WHEN $2 = 'DELIVERED' THEN $4 ELSE delivered_at END
        WHERE id = $1
        """,
        delivery_id,
        then.status.value,
        then.at,
        attempt.attempted_at,
    )


async def note_endpoint_health(conn: Conn, subscription_id: str, *, succeeded: bool, now: datetime) -> datetime | None:
    """Remembers since when the endpoint has been failing (a success forgets it); returns that time."""
    value: datetime | None = await conn.fetchval(
        """
        UPDATE event_subscriptions SET failing_since = CASE WHEN $2 THEN NULL ELSE coalesce(failing_since, $3) END
        WHERE id = $1
        RETURNING failing_since
        """,
        subscription_id,
        succeeded,
        now,
    )
    return value


async def disable(conn: Conn, subscription_id: str, *, reason: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE event_subscriptions SET enabled = false, disabled_reason = $2, updated_at = $3 WHERE id = $1",
        subscription_id,
        reason,
        now,
    )


# --- what ops see and do ----------------------------------------------------------------------------------

_SELECT_DELIVERY = """
    SELECT d.id, d.subscription_id, d.event_id, e.type AS event_type, e.customer_id, e.sequence, d.status,
           d.next_attempt_at, d.created_at, d.delivered_at
    FROM event_deliveries d JOIN lifecycle_events e ON e.id = d.event_id
"""


def _delivery(row: asyncpg.Record, attempts: list[Attempt]) -> Delivery:
    status = DeliveryStatus(row["status"])
    return Delivery(
        id=row["id"],
        subscription_id=str(row["subscription_id"]),
        event_id=str(row["event_id"]),
        event_type=row["event_type"],
        customer_id=str(row["customer_id"]),
        sequence=row["sequence"],
        status=status,
        next_attempt_at=row["next_attempt_at"] if status in DUE_STATUSES else None,
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        attempts=attempts,
    )


async def _with_attempts(conn: Conn, rows: list[asyncpg.Record]) -> list[Delivery]:
    attempts: dict[int, list[Attempt]] = {row["id"]: [] for row in rows}
    for attempt in await conn.fetch(
        """
        SELECT delivery_id, attempted_at, status_code, latency_ms, response_head, error
        FROM event_delivery_attempts WHERE delivery_id = ANY($1::bigint[]) ORDER BY id
        """,
        list(attempts),
    ):
        attempts[attempt["delivery_id"]].append(
            Attempt(
                attempted_at=attempt["attempted_at"],
                status_code=attempt["status_code"],
                latency_ms=attempt["latency_ms"],
                response_head=attempt["response_head"],
                error=attempt["error"],
            )
        )
    return [_delivery(row, attempts[row["id"]]) for row in rows]


async def list_deliveries(
    conn: Conn, subscription_id: str, *, status: DeliveryStatus | None, before_id: int | None, limit: int
) -> list[Delivery]:
    """Newest first, with every attempt; `before_id` continues a page."""
    rows = await conn.fetch(
        f"""
        {_SELECT_DELIVERY}
        WHERE d.subscription_id = $1 AND ($2::text IS NULL OR d.status = $2) AND ($3::bigint IS NULL OR d.id < $3)
        ORDER BY d.id DESC
        LIMIT $4
        """,
        subscription_id,
        status.value if status is not None else None,
        before_id,
        limit,
    )
    return await _with_attempts(conn, list(rows))


async def get_delivery(conn: Conn, delivery_id: int) -> Delivery | None:
    rows = await conn.fetch(f"{_SELECT_DELIVERY} WHERE d.id = $1", delivery_id)
    found = await _with_attempts(conn, list(rows))
    return found[0] if found else None


async def replay_delivery(conn: Conn, delivery_id: int) -> bool:
    """Due again now, with a fresh schedule; its attempts so far are kept."""
    return (
        await conn.fetchval(
            """
            UPDATE event_deliveries SET status = 'PENDING', round_attempts = 0, next_attempt_at = now()
            WHERE id = $1 RETURNING true
            """,
            delivery_id,
        )
        is True
    )


async def replay_since(conn: Conn, subscription: Subscription, since: datetime) -> int:
    """Every event since `since` the subscription wants, due again now: also those it never had a delivery
    for (published before it existed or while it was disabled). Returns how many."""
    replayed: int = await conn.fetchval(
        """
        WITH replayed AS (
            INSERT INTO event_deliveries (subscription_id, event_id)
            SELECT $1, e.id FROM lifecycle_events e
            WHERE e.time >= $2 AND (cardinality($3::text[]) = 0 OR e.type = ANY($3::text[]))
            ORDER BY e.txid, e.position
            ON CONFLICT (subscription_id, event_id) DO UPDATE
                SET status = 'PENDING', round_attempts = 0, next_attempt_at = now()
            RETURNING 1
        )
        SELECT count(*) FROM replayed
        """,
        subscription.id,
        since,
        subscription.event_types,
    )
    return replayed
