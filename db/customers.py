"""The customer projection, its audit trail and deposit accounts: every SQL statement about a customer.

The workflow owns a customer's state; the `customers` table is its projection, written by the
workflow's activities in the transaction of each change, and what the API reads customers from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from domain.customer import (
    AccountCategory,
    CustomerStatus,
    CustomerType,
    DepositAccountStatus,
    KycStatus,
    OnboardingStage,
    normalise_email,
)
from domain.state import CustomerState, DepositAccount


class EmailTakenError(Exception):
    """The email (or telegram handle) already belongs to another customer."""


# Not part of the projection's document: the dedupe memory is the workflow's own business, the run id is
# a column (it names the run that wrote the row) and the deposit account is read from its own table.
_NOT_PROJECTED = {"applied_kyc_events", "run_id", "deposit_account"}

# A connection of its own or one borrowed from the pool (`pool.acquire()` hands out a proxy wrapping a Connection).
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy


async def save_customer(conn: Conn, state: CustomerState, *, workflow_id: str, run_id: str) -> None:
    """Upserts the projection of the workflow's state: the state as a document, from which PostgreSQL
    generates the columns that are filtered and looked up by (migration 0003). A unique violation on email
    or telegram handle means another customer owns it. An older state never overwrites a newer one."""
    try:
        await conn.execute(
            """
            INSERT INTO customers (id, state, workflow_id, run_id, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (id) DO UPDATE SET
                state = EXCLUDED.state, run_id = EXCLUDED.run_id, updated_at = EXCLUDED.updated_at
            WHERE customers.updated_at <= EXCLUDED.updated_at
            """,
            state.customer_id,
            state.model_dump(mode="json", exclude=_NOT_PROJECTED),
            workflow_id,
            run_id,
            state.created_at,
            state.updated_at,
        )
    except asyncpg.UniqueViolationError as exc:
        raise EmailTakenError(exc.constraint_name or "unique") from exc


async def append_event(
    conn: Conn,
    *,
    customer_id: str,
    event_type: str,
    actor: str,
    details: dict[str, Any],
    occurred_at: datetime,
    workflow_id: str | None,
    run_id: str | None,
    idempotency_key: str,
) -> bool:
    """Appends to the customer's event log once per idempotency key (a retried activity writes nothing).

    True when this call inserted the row, False when the key was already there."""
    row = AuditRow(event_type, actor, details, occurred_at, idempotency_key)
    return bool(await append_events(conn, customer_id=customer_id, rows=[row], workflow_id=workflow_id, run_id=run_id))


async def append_events(
    conn: Conn, *, customer_id: str, rows: list[AuditRow], workflow_id: str | None, run_id: str | None
) -> set[str]:
    """`append_event` for several rows in one statement (a batch of a workflow's changes), in their order;
    returns the idempotency keys it inserted."""
    inserted = await conn.fetch(
        """
        INSERT INTO customer_events (customer_id, event_type, actor, details, occurred_at, workflow_id, run_id,
            idempotency_key)
        SELECT $1, event_type, actor, details::jsonb, occurred_at, $6, $7, idempotency_key
        FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $8::text[])
            WITH ORDINALITY AS r (event_type, actor, details, occurred_at, idempotency_key, position)
        ORDER BY position
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING idempotency_key
        """,
        customer_id,
        [row.event_type for row in rows],
        [row.actor for row in rows],
        [orjson.dumps(row.details).decode() for row in rows],
        [row.occurred_at for row in rows],
        workflow_id,
        run_id,
        [row.idempotency_key for row in rows],
    )
    return {record["idempotency_key"] for record in inserted}


async def open_deposit_account(
    conn: Conn, *, account_id: str, customer_id: str, category: AccountCategory
) -> DepositAccount:
    """Opens the customer's one deposit account, or returns the one already open (unique customer_id)."""
    row = await conn.fetchrow(
        """
        WITH inserted AS (
            INSERT INTO deposit_accounts (id, customer_id, category, status) VALUES ($1, $2, $3, 'ACTIVE')
            ON CONFLICT (customer_id) DO NOTHING
            RETURNING id, category, status, created_at
        )
        SELECT * FROM inserted
        UNION ALL
        SELECT id, category, status, created_at FROM deposit_accounts WHERE customer_id = $2
        LIMIT 1
        """,
        account_id,
        customer_id,
        category.value,
    )
    assert row is not None
    return _deposit_account(row)


async def set_deposit_account_status(
    conn: Conn, *, customer_id: str, status: DepositAccountStatus
) -> DepositAccount | None:
    row = await conn.fetchrow(
        """
        UPDATE deposit_accounts SET status = $2, updated_at = now() WHERE customer_id = $1
        RETURNING id, category, status, created_at
        """,
        customer_id,
        status.value,
    )
    return None if row is None else _deposit_account(row)


def _deposit_account(row: asyncpg.Record) -> DepositAccount:
    return DepositAccount(
        id=str(row["id"]),
        category=AccountCategory(row["category"]),
        status=DepositAccountStatus(row["status"]),
        created_at=row["created_at"],
    )


# The projection row with its deposit account, as every customer read selects it.
_SELECT_CUSTOMER = """
    SELECT c.state, c.run_id, a.id AS account_id, a.category AS account_category, a.status AS account_status,
           a.created_at AS account_created_at
    FROM customers c LEFT JOIN deposit_accounts a ON a.customer_id = c.id
"""


def _customer_state(row: asyncpg.Record) -> CustomerState:
    """The one mapping from a `_SELECT_CUSTOMER` row to the workflow's state shape (as its last run saved it)."""
    account = None
    if row["account_id"] is not None:
        account = DepositAccount(
            id=str(row["account_id"]),
            category=row["account_category"],
            status=row["account_status"],
            created_at=row["account_created_at"],
        )
    return CustomerState.model_validate({**row["state"], "run_id": row["run_id"], "deposit_account": account})


async def get_customer(pool: asyncpg.Pool, customer_id: str) -> CustomerState | None:
    row = await pool.fetchrow(f"{_SELECT_CUSTOMER} WHERE c.id = $1", customer_id)
    return None if row is None else _customer_state(row)


async def lock_customer(conn: Conn, customer_id: str) -> CustomerState | None:
    """The customer, its projection row locked until the caller's transaction ends (appending a published
    event outside the workflow needs the lock that keeps the customer's event sequence gap-free)."""
    row = await conn.fetchrow(f"{_SELECT_CUSTOMER} WHERE c.id = $1 FOR UPDATE OF c", customer_id)
    return None if row is None else _customer_state(row)


async def get_customer_by_email(pool: asyncpg.Pool, email: str) -> CustomerState | None:
    """The customer holding this normalised email (unique, `customers_email_key`)."""
    row = await pool.fetchrow(f"{_SELECT_CUSTOMER} WHERE c.email = $1", email)
    return None if row is None else _customer_state(row)


# The audit details that stay after erasure: ids, stages, statuses and the names of changed fields, never a value
# someone typed (a document's `kind` is free text; a request's kind stays on its four_eyes_requests row).
_KEPT_AFTER_ERASURE = ("document_id", "request_id", "from_stage", "to_stage", "status", "stage", "changed_fields")


async def tombstone_customer(conn: Conn, tombstone: CustomerState, *, erased_reason: str) -> None:
    """Erasure in PostgreSQL, in the caller's transaction (holding `lock_customer`'s lock): the projection
    becomes `tombstone`; the verified profile is deleted; documents' names and digests, the audit trail's
    details (types, actors and times stay), the Sumsub webhooks' bodies and other compliance requests'
    reasons (the erasure's own included) lose every personal value."""
    customer_id = tombstone.customer_id
    await conn.execute(
        "UPDATE customers SET state = $2, updated_at = $3 WHERE id = $1",
        customer_id,
        tombstone.model_dump(mode="json", exclude=_NOT_PROJECTED),
        tombstone.updated_at,
    )
    await conn.execute("DELETE FROM customer_profiles WHERE customer_id = $1", customer_id)
    await conn.execute(
        """
        UPDATE customer_documents SET filename = $2, original_filename = $2, sha256 = $2,
            kind = CASE WHEN kind IS NULL THEN NULL ELSE $2 END, status = 'DELETED',
            updated_at = now()
        WHERE customer_id = $1
        """,
        customer_id,
        erased_reason,
    )
    await conn.execute(
        """
        UPDATE customer_events
        SET details = (SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) FROM jsonb_each(details)
                       WHERE key = ANY($2::text[])) || '{"erased": true}'::jsonb
        WHERE customer_id = $1
        """,
        customer_id,
        list(_KEPT_AFTER_ERASURE),
    )
    await tombstone_webhooks(conn, customer_id, tombstone.applicant_id)
    # The published document events carry the document's kind, free text: its tombstone (the schema allows any string).
    await conn.execute(
        """
        UPDATE lifecycle_events SET data = jsonb_set(data, '{document,kind}', to_jsonb($2::text))
        WHERE customer_id = $1 AND jsonb_typeof(data #> '{document,kind}') = 'string'
        """,
        customer_id,
        erased_reason,
    )
    await conn.execute(
        """
        UPDATE four_eyes_requests SET reason = $2, decision_reason = CASE WHEN decision_reason IS NULL THEN NULL
            ELSE $2 END
        WHERE customer_id = $1
        """,
        customer_id,
        erased_reason,
    )


async def tombstone_webhooks(conn: Conn | asyncpg.Pool, customer_id: str, applicant_id: str | None) -> None:
    """The customer's stored Sumsub webhooks keep their type only; pending ones are settled. Erasure runs it in its
    transaction and again after the commit, for a webhook stored while that transaction ran."""
    await conn.execute(
        """
        UPDATE sumsub_webhook_inbox SET payload = jsonb_build_object('type', event_type, 'erased', true),
            last_error = NULL,
            -- a pending one is settled: no workflow will take it (the relay settles any that come later)
            outcome = CASE WHEN delivered_at IS NULL THEN 'customer_erased' ELSE outcome END,
            delivered_at = coalesce(delivered_at, now()), leased_until = NULL
        WHERE external_user_id = $1 OR applicant_id = $2
        """,
        customer_id,
        applicant_id,
    )


async def find_customer_id(
    pool: asyncpg.Pool,
    *,
    email: str | None = None,
    telegram_handle: str | None = None,
    keycloak_user_id: str | None = None,
) -> str | None:
    """The id of the customer holding this (normalised) email, Keycloak user or telegram handle, if any."""
    if email is not None:
        value = await pool.fetchval("SELECT id FROM customers WHERE email = $1", normalise_email(email))
    elif keycloak_user_id is not None:
        value = await pool.fetchval("SELECT id FROM customers WHERE keycloak_user_id = $1 LIMIT 1", keycloak_user_id)
    else:
        value = await pool.fetchval("SELECT id FROM customers WHERE telegram_handle = $1", telegram_handle)
    return str(value) if value is not None else None


# --- the customer list (keyset pagination) ----------------------------------------------------------------


@dataclass(frozen=True)
class CustomerFilter:
    """Which customers a list holds: each field set narrows it; the creation range is [after, before)."""

    status: CustomerStatus | None = None
    customer_type: CustomerType | None = None
    kyc_status: KycStatus | None = None
    stage: OnboardingStage | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class CustomerKey:
    """A customer's place in the list: the sort key (created_at, id), which is unique."""

    created_at: datetime
    customer_id: str


def customer_page_query(
    filter: CustomerFilter, *, after: CustomerKey | None, descending: bool, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and arguments of one page: the customers past `after` in (created_at, id) order.

    Keyset, not OFFSET: every page is an index range scan (migration 0002) that stops after `limit` rows,
    so page 1000 costs what page 1 costs, and rows inserted meanwhile do not shift later pages (no
    customer is shown twice or skipped)."""
    conditions: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    equal = {
        "status": filter.status,
        "customer_type": filter.customer_type,
        "kyc_status": filter.kyc_status,
        "onboarding_stage": filter.stage,
    }
    for column, value in equal.items():
        if value is not None:
            conditions.append(f"c.{column} = {_enum_literal(value)}")
    if filter.created_after is not None:
        conditions.append(f"c.created_at >= {arg(filter.created_after)}")
    if filter.created_before is not None:
        conditions.append(f"c.created_at < {arg(filter.created_before)}")
    if after is not None:
        past = "<" if descending else ">"
        conditions.append(f"(c.created_at, c.id) {past} ({arg(after.created_at)}, {arg(after.customer_id)}::uuid)")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    direction = "DESC" if descending else "ASC"
    # LIMIT inlined too: with a bound LIMIT a generic plan assumes a large result and may hash-join every
    # deposit account instead of looking up the page's few.
    sql = f"{_SELECT_CUSTOMER} {where} ORDER BY c.created_at {direction}, c.id {direction} LIMIT {int(limit)}"
    return sql, args


def _enum_literal(value: StrEnum) -> str:
    """An enum member as an SQL literal. Filter values are inlined, not bound: they are a closed set, and a
    literal keeps the plan specific to the value, so a rare one (BANK, SUSPENDED) is read from its own index
    even after PostgreSQL caches a generic plan for a prepared statement (it would not know the value)."""
    if not _ENUM_VALUE.fullmatch(value.value):
        raise ValueError(f"not an enum value: {value!r}")
    return f"'{value.value}'"


_ENUM_VALUE = re.compile(r"[A-Z][A-Z_]*")


async def list_customers(
    pool: asyncpg.Pool, filter: CustomerFilter, *, after: CustomerKey | None, descending: bool, limit: int
) -> list[CustomerState]:
    """One page of the projection, in (created_at, id) order, starting past `after`."""
    sql, args = customer_page_query(filter, after=after, descending=descending, limit=limit)
    return [_customer_state(row) for row in await pool.fetch(sql, *args)]


@dataclass(frozen=True)
class CustomerEvent:
    event_type: str
    actor: str
    details: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True)
class AuditRow(CustomerEvent):
    """An audit row to append, with the key that makes it once per run and step."""

    idempotency_key: str


# The most audit rows one read returns (newest first).
EVENTS_LIMIT = 200


async def list_events(pool: asyncpg.Pool, customer_id: str, *, limit: int = EVENTS_LIMIT) -> list[CustomerEvent]:
    """The customer's audit trail, newest first."""
    rows = await pool.fetch(
        """
        SELECT event_type, actor, details, occurred_at FROM customer_events
        WHERE customer_id = $1 ORDER BY occurred_at DESC, id DESC LIMIT $2
        """,
        customer_id,
        limit,
    )
    return [CustomerEvent(r["event_type"], r["actor"], r["details"], r["occurred_at"]) for r in rows]
