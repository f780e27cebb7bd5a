"""`record_changes` against the real PostgreSQL: a batch of audit rows (Sumsub events the workflow recorded
together) is written in order, each once even when the activity is retried, and only the change that
publishes reaches the outbox, with the state it was recorded with."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio.testing import ActivityEnvironment

import db.pool
from activities.database import AuditEntry, DatabaseActivities, RecordChangesInput
from dev.stack import DevStack
from domain.customer import CustomerType, KycStatus, OnboardingStage
from domain.state import CustomerState, Registration


async def test_a_batch_of_audit_rows_is_written_once_in_order_and_only_the_published_change_is_told(
    stack: DevStack, database: asyncpg.Pool
) -> None:
    customer_id = str(uuid.uuid4())
    received = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    state = CustomerState(
        registration=Registration(
            customer_id=customer_id, email=f"{customer_id}@example.com", customer_type=CustomerType.INDIVIDUAL
        ),
        stage=OnboardingStage.KYC_IN_REVIEW,
        kyc_status=KycStatus.PENDING,
        created_at=received,
        updated_at=received + timedelta(seconds=2),
    )
    ignored = {"sumsub_type": "applicantActionPending", "kind": "IGNORED", "ignored": "duplicate"}
    entries = [
        AuditEntry(event_type="kyc.event_ignored", sequence=4, actor="sumsub", details=ignored, occurred_at=received),
        AuditEntry(
            event_type="kyc.event_ignored",
            sequence=5,
            actor="sumsub",
            details=ignored,
            occurred_at=received + timedelta(seconds=1),
        ),
        AuditEntry(
            event_type="kyc.submitted",
            sequence=6,
            actor="sumsub",
            details={"sumsub_type": "applicantPending", "kind": "SUBMITTED"},
            occurred_at=received + timedelta(seconds=2),
        ),
    ]
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"customer-{customer_id}", workflow_run_id="run-1")
    pool = await db.pool.create_pool(stack.child_env["DATABASE_URL"], size=2)
    try:
        activities = DatabaseActivities(pool)
        await env.run(activities.record_changes, RecordChangesInput(state=state, entries=entries))
        await env.run(activities.record_changes, RecordChangesInput(state=state, entries=entries))  # a retry
    finally:
        await pool.close()

    rows = await database.fetch(
        "SELECT event_type, occurred_at, idempotency_key FROM customer_events WHERE customer_id = $1 ORDER BY id",
        customer_id,
    )
    assert [(r["event_type"], r["occurred_at"], r["idempotency_key"]) for r in rows] == [
        (e.event_type, e.occurred_at, f"customer-{customer_id}:run-1:{e.sequence}") for e in entries
    ]
    published = await database.fetch(
        "SELECT type, data->>'stage' AS stage FROM lifecycle_events WHERE customer_id = $1", customer_id
    )
    assert [(r["type"], r["stage"]) for r in published] == [("customer.kyc_submitted", "KYC_IN_REVIEW")]
    stage = await database.fetchval("SELECT state->>'stage' FROM customers WHERE id = $1", customer_id)
    assert stage == "KYC_IN_REVIEW"
