"""EventDeliveryWorkflow on a real Temporal dev server with a scripted stand-in for its one activity
(tests/test_event_webhooks.py runs the real one against real endpoints): it goes again at once while
deliveries are due, sleeps until the next retry, sleeps (up to its idle check) until woken, and ends
when its subscription is gone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deliveries import DeliveryRound
from tests.test_customer_workflow import _local_env
from workflows.delivery import IDLE_CHECK, EventDeliveryWorkflow, delivery_workflow_id, wake_delivery

pytestmark = pytest.mark.workflow


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await _local_env() as environment:
        yield environment


class ScriptedRounds:
    """The rounds `deliver_due` answers, in order; then "nothing due"."""

    def __init__(self, rounds: list[Callable[[], DeliveryRound]]) -> None:
        self.rounds = rounds
        self.calls = 0

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="deliver_due")
        async def deliver_due(subscription_id: str) -> DeliveryRound:
            self.calls += 1
            return self.rounds.pop(0)() if self.rounds else DeliveryRound()

        return [deliver_due]


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def timers_started(handle: WorkflowHandle[Any, Any]) -> list[timedelta]:
    history = await handle.fetch_history()
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


async def rounds_then_gone(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle[Any, Any]:
    """More due -> a retry due in 1 s -> nothing due (idle) -> woken -> the subscription is gone."""
    script = ScriptedRounds(
        [
            lambda: DeliveryRound(attempted=100, more_due=True),
            lambda: DeliveryRound(attempted=3, next_due_at=datetime.now(UTC) + timedelta(seconds=1)),
            lambda: DeliveryRound(attempted=1),
            lambda: DeliveryRound(gone=True),
        ]
    )
    subscription_id = str(uuid.uuid4())
    async with Worker(
        env.client, task_queue=task_queue, workflows=[EventDeliveryWorkflow], activities=script.activities()
    ):
        await wake_delivery(env.client, task_queue=task_queue, subscription_id=subscription_id)
        handle = env.client.get_workflow_handle(delivery_workflow_id(subscription_id))
        await until(lambda: script.calls == 3)  # the third round came by itself, after the 1 s retry timer
        async with asyncio.timeout(20):  # then the workflow sleeps: its idle timer is running
            while IDLE_CHECK not in await timers_started(handle):
                await asyncio.sleep(0.05)
        await wake_delivery(env.client, task_queue=task_queue, subscription_id=subscription_id)
        await handle.result()
        assert script.calls == 4
    return handle


async def test_a_delivery_workflow_retries_on_time_sleeps_until_woken_and_ends_when_gone(
    env: WorkflowEnvironment,
) -> None:
    handle = await rounds_then_gone(env, f"delivery-{uuid.uuid4().hex[:8]}")
    history = await handle.fetch_history()
    timers = await timers_started(handle)
    # No timer after "more due" (straight on); about a second until the retry; then the idle check.
    assert len(timers) == 2, timers
    assert timedelta(milliseconds=100) <= timers[0] <= timedelta(seconds=1)
    assert timers[1] == IDLE_CHECK
    fired = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED]
    signals = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert len(fired) == 1 and len(signals) == 2  # the retry timer fired; the idle one was cut short by `wake`
