"""Activities that write the customer's projection, event log and deposit account to PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

import db.customers
import db.events
import domain.events
from domain.customer import AccountCategory, DepositAccountStatus
from domain.errors import ErrorType
from domain.state import CustomerState, DepositAccount
from kit import metrics

log = structlog.get_logger("activities.database")


class RecordChangeInput(BaseModel):
    state: CustomerState
    event_type: str
    sequence: int = Field(description="Position of this change in the run; makes the event write idempotent.")
    actor: str = "system"
    details: dict[str, Any] = Field(default_factory=dict)


class AuditEntry(BaseModel):
    """One audit row of a batch."""

    event_type: str
    sequence: int = Field(description="Position of this change in the run; makes the event write idempotent.")
    actor: str = "system"
    details: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime


class RecordChangesInput(BaseModel):
    """The state after the last entry, and the entries oldest first. Only the last may publish an event: a
    published event carries the state, and the state is the one after the last."""

    state: CustomerState
    entries: list[AuditEntry]


class OpenDepositAccountInput(BaseModel):
    customer_id: str
    account_id: str
    category: AccountCategory


class SetAccountStatusInput(BaseModel):
    customer_id: str
    status: DepositAccountStatus


class DatabaseActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn
    async def record_change(self, change: RecordChangeInput) -> None:
        """Saves the customer's new state, appends the audit row that explains it and, for a change the rest of
        the bank is told of, its published event: all in one transaction."""
        entry = AuditEntry(
            event_type=change.event_type,
            sequence=change.sequence,
            actor=change.actor,
            details=change.details,
            occurred_at=change.state.updated_at,
        )
        await self._save(change.state, [entry])

    @activity.defn
    async def record_changes(self, changes: RecordChangesInput) -> None:
        """`record_change` for several audit rows at once (a batch of Sumsub events): one activity, one
        transaction, instead of one each."""
        if any(domain.events.published_type(e.event_type, e.details) for e in changes.entries[:-1]):
            raise ApplicationError(
                "only the last change of a batch may publish (a published event carries the state)", non_retryable=True
            )
        await self._save(changes.state, changes.entries)

    async def _save(self, state: CustomerState, entries: list[AuditEntry]) -> None:
        info = activity.info()
        # Optional in Temporal's types (a standalone activity has no workflow); the projection names its run.
        if info.workflow_id is None or info.workflow_run_id is None:
            raise ApplicationError(f"{info.activity_type} runs only inside a customer workflow", non_retryable=True)
        keys = {entry.sequence: f"{info.workflow_id}:{info.workflow_run_id}:{entry.sequence}" for entry in entries}
        rows = [
            db.customers.AuditRow(entry.event_type, entry.actor, entry.details, entry.occurred_at, keys[entry.sequence])
            for entry in entries
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await db.customers.save_customer(conn, state, workflow_id=info.workflow_id, run_id=info.workflow_run_id)
            except db.customers.EmailTakenError as exc:
                raise ApplicationError(
                    f"email or telegram handle already belongs to another customer ({exc})",
                    type=ErrorType.CUSTOMER_CONFLICT,
                    non_retryable=True,
                ) from exc
            written = await db.customers.append_events(
                conn,
                customer_id=state.customer_id,
                rows=rows,
                workflow_id=info.workflow_id,
                run_id=info.workflow_run_id,
            )
            # Rows an earlier attempt wrote were published by it.
            inserted = [entry for entry in entries if keys[entry.sequence] in written]
            for entry in inserted:
                published = domain.events.published_type(entry.event_type, entry.details)
                if published is not None:  # the outbox, in the same transaction (a retry adds nothing)
                    await db.events.append(
                        conn,
                        customer_id=state.customer_id,
                        type=published,
                        time=entry.occurred_at,
                        data=domain.events.event_data(state, entry.event_type, entry.details),
                        idempotency_key=keys[entry.sequence],
                    )
        # Committed: count and log each event once, not again when a retry finds it written.
        for entry in inserted:
            metrics.observe_customer_event(
                entry.event_type, registered_at=state.created_at, occurred_at=entry.occurred_at
            )
        fields = {"stage": state.stage.value, "status": state.status.value}
        if len(inserted) == 1:
            entry = inserted[0]
            log.info(
                "customer event recorded",
                event_type=entry.event_type,
                actor=entry.actor,
                sequence=entry.sequence,
                **fields,
            )
        elif inserted:  # a batch of Sumsub events (a storm): one line, not one each
            log.info(
                "customer events recorded",
                event_types=dict(Counter(entry.event_type for entry in inserted)),
                sequences=[inserted[0].sequence, inserted[-1].sequence],
                **fields,
            )

    @activity.defn
    async def open_deposit_account(self, request: OpenDepositAccountInput) -> DepositAccount:
        """Opens the one deposit account; a retry returns the account the first attempt opened."""
        async with self._pool.acquire() as conn:
            return await db.customers.open_deposit_account(
                conn, account_id=request.account_id, customer_id=request.customer_id, category=request.category
            )

    @activity.defn
    async def set_deposit_account_status(self, request: SetAccountStatusInput) -> DepositAccount:
        """Freezes, reactivates or closes the customer's account; setting the same status twice is harmless."""
        async with self._pool.acquire() as conn:
            account = await db.customers.set_deposit_account_status(
                conn, customer_id=request.customer_id, status=request.status
            )
        if account is None:
            raise ApplicationError(
                "the customer has no deposit account", type=ErrorType.NO_DEPOSIT_ACCOUNT, non_retryable=True
            )
        return account
