"""Four-eyes compliance requests (migration 0010): the SQL; the rules are in `domain/four_eyes.py`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db.customers import Conn
from domain.four_eyes import FourEyesRequest, RequestKind, RequestState

_COLUMNS = (
    "id::text, customer_id::text, kind, state, reason, requested_by, requested_at, expires_at, decided_by,"
    " decided_at, decision_reason, requested_by_actor, decided_by_actor, executed_at, executing_since"
)


class PendingRequestExists(Exception):
    """The customer already has a pending request of this kind."""


@dataclass(frozen=True)
class StoredRequest:
    request: FourEyesRequest
    requested_by_actor: str
    decided_by_actor: str | None
    executed_at: datetime | None
    executing_since: datetime | None = None  # a confirmation is carrying it out (db: the execution claim)


def _stored(row: asyncpg.Record) -> StoredRequest:
    return StoredRequest(
        request=FourEyesRequest(
            id=row["id"],
            kind=RequestKind(row["kind"]),
            customer_id=row["customer_id"],
            reason=row["reason"],
            requested_by=row["requested_by"],
            requested_at=row["requested_at"],
            expires_at=row["expires_at"],
            state=RequestState(row["state"]),
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            decision_reason=row["decision_reason"],
        ),
        requested_by_actor=row["requested_by_actor"],
        decided_by_actor=row["decided_by_actor"],
        executed_at=row["executed_at"],
        executing_since=row["executing_since"],
    )


async def insert(conn: Conn, request: FourEyesRequest, *, actor: str, now: datetime) -> None:
    """Stores a new PENDING request; an expired one of the same kind is marked EXPIRED first."""
    await conn.execute(
        """
        UPDATE four_eyes_requests SET state = 'EXPIRED'
        WHERE customer_id = $1 AND kind = $2 AND state = 'PENDING' AND expires_at <= $3
        """,
        request.customer_id,
        request.kind.value,
        now,
    )
    try:
        await conn.execute(
            """
            INSERT INTO four_eyes_requests (id, customer_id, kind, state, reason, requested_by, requested_by_actor,
                requested_at, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            request.id,
            request.customer_id,
            request.kind.value,
            request.state.value,
            request.reason,
            request.requested_by,
            actor,
            request.requested_at,
            request.expires_at,
        )
    except asyncpg.UniqueViolationError:
        raise PendingRequestExists(f"the customer already has a pending {request.kind.value} request") from None


async def get(conn: Conn | asyncpg.Pool, request_id: str, *, for_update: bool = False) -> StoredRequest | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM four_eyes_requests WHERE id = $1{' FOR UPDATE' if for_update else ''}",
        request_id,
    )
    return None if row is None else _stored(row)


async def for_customer(conn: Conn | asyncpg.Pool, customer_id: str) -> list[StoredRequest]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM four_eyes_requests WHERE customer_id = $1 ORDER BY requested_at DESC, id",
        customer_id,
    )
    return [_stored(row) for row in rows]


async def save_decision(conn: Conn, request: FourEyesRequest, *, actor: str) -> None:
    await conn.execute(
        """
        UPDATE four_eyes_requests SET state = $2, decided_by = $3, decided_by_actor = $4, decided_at = $5,
            decision_reason = $6
        WHERE id = $1
        """,
        request.id,
        request.state.value,
        request.decided_by,
        actor,
        request.decided_at,
        request.decision_reason,
    )


async def mark_executed(conn: Conn, request_id: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE four_eyes_requests SET executed_at = $2, executing_since = NULL WHERE id = $1", request_id, at
    )


async def claim_execution(conn: Conn, request_id: str, now: datetime) -> None:
    """Marks the request as being carried out (the caller holds its row lock: `get(..., for_update=True)`)."""
    await conn.execute("UPDATE four_eyes_requests SET executing_since = $2 WHERE id = $1", request_id, now)


async def release_execution(conn: Conn | asyncpg.Pool, request_id: str) -> None:
    """The execution stopped before its end (an outage): the next confirmation may resume at once."""
    await conn.execute(
        "UPDATE four_eyes_requests SET executing_since = NULL WHERE id = $1 AND executed_at IS NULL", request_id
    )


def audit_details(stored: StoredRequest) -> dict[str, Any]:
    """What the audit trail says about a request: both officers (subject and client), both times, the reasons."""
    request = stored.request
    return {
        "request_id": request.id,
        "kind": request.kind.value,
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_by_actor": stored.requested_by_actor,
        "requested_at": request.requested_at.isoformat(),
        "expires_at": request.expires_at.isoformat(),
        "decided_by": request.decided_by,
        "decided_by_actor": stored.decided_by_actor,
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "decision_reason": request.decision_reason,
    }
