"""The lifecycle's real durations (reminders after 1, 3 and 7 days, expiry after 30, a status poll
every 6 hours) on Temporal's time-skipping test server, with the stand-in activities of
test_customer_workflow. The workflow is told to leave search attributes alone: that server has none."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.customer import CustomerType
from domain.kyc import KycEventKind
from domain.state import CustomerState, CustomerWorkflowInput, OnboardingPolicy, Registration
from tests.test_customer_workflow import FakeWorld, event
from workflows.customer import CustomerWorkflow

pytestmark = pytest.mark.workflow  # Temporal's time-skipping test server (see test_customer_workflow.py)

DEFAULT_POLICY = OnboardingPolicy()  # 1/3/7-day reminders, 30-day expiry, 6-hour polls


@pytest_asyncio.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
        # The SDK's 5 s default is too short for a JVM start on a busy 2-core machine (seen failing there).
        test_server_startup_timeout=timedelta(seconds=60),
    ) as environment:
        yield environment


async def start(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle[CustomerWorkflow, CustomerState]:
    customer_id = str(uuid.uuid4())
    registration = Registration(customer_id=customer_id, email="ada@example.com", customer_type=CustomerType.INDIVIDUAL)
    return await env.client.start_workflow(
        CustomerWorkflow.run,
        CustomerWorkflowInput(registration=registration, policy=DEFAULT_POLICY, keep_search_attributes=False),
        id=f"customer-{customer_id}",
        task_queue=task_queue,
    )


async def test_reminders_on_days_1_3_and_7_then_expiry_on_day_30(skipping: WorkflowEnvironment) -> None:
    world, task_queue = FakeWorld(), f"tq-{uuid.uuid4()}"
    async with Worker(
        skipping.client, task_queue=task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        handle = await start(skipping, task_queue)
        await handle.query(CustomerWorkflow.state)  # the first workflow task has run
        started = await skipping.get_current_time()
        seen = {}
        # Walk the calendar checkpoint by checkpoint; the server skips the time in between.
        for day in (0.5, 1.5, 2.5, 3.5, 6.5, 7.5, 29.5, 30.5):
            await skipping.sleep(started + timedelta(days=day) - await skipping.get_current_time())
            state = await handle.query(CustomerWorkflow.state)
            seen[day] = (len(world.notifications), state.stage.value)
    assert seen == {
        0.5: (0, "AWAITING_KYC"),
        1.5: (1, "AWAITING_KYC"),
        2.5: (1, "AWAITING_KYC"),
        3.5: (2, "AWAITING_KYC"),
        6.5: (2, "AWAITING_KYC"),
        7.5: (3, "AWAITING_KYC"),
        29.5: (3, "AWAITING_KYC"),
        30.5: (3, "EXPIRED"),
    }
    assert world.user_enabled == [False] and world.deactivated_applicants == ["applicant-1"]
    assert 115 <= world.polls <= 121  # every 6 hours for 30 days


async def test_a_submitted_customer_is_not_reminded_and_a_lost_verdict_is_found_by_the_6_hour_poll(
    skipping: WorkflowEnvironment,
) -> None:
    world, task_queue = FakeWorld(), f"tq-{uuid.uuid4()}"
    async with Worker(
        skipping.client, task_queue=task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        handle = await start(skipping, task_queue)
        await handle.query(CustomerWorkflow.state)
        started = await skipping.get_current_time()
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.SUBMITTED, 1))
        await skipping.sleep(timedelta(days=2))
        submitted = await handle.query(CustomerWorkflow.state)
        world.polled_review = event(KycEventKind.APPROVED, 2)  # approved at Sumsub; the webhook got lost
        await skipping.sleep(started + timedelta(days=2, hours=6, minutes=1) - await skipping.get_current_time())
        approved = await handle.query(CustomerWorkflow.state)
    assert submitted.stage.value == "KYC_IN_REVIEW" and world.notifications == []
    assert approved.stage.value == "ONBOARDED" and approved.status.value == "ACTIVE" and len(world.accounts) == 1
