"""EventDeliveryWorkflow: one long-lived workflow per webhook subscription, delivering its events.

It reads like the job: run a delivery round (an activity that sends what is due and, while it runs, what
becomes due: the worker's waker tells it), then wait until the next retry is due or until told that new
events are owed (the `wake` signal: the waker's answer to PostgreSQL's NOTIFY from the transaction that
wrote the event, or from ops creating, enabling or replaying, when no round listens). One workflow per subscription
means one round at a time per endpoint, however many workers run, and that a slow or dead endpoint holds
up no other. Temporal retries a round that fails or whose worker dies (its heartbeat stops); history is
kept short by continuing as new. The workflow ends when its subscription is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.deliveries import DeliveryActivities, DeliveryRound

# A safety net for a lost NOTIFY: an idle workflow looks for due deliveries at least this often.
IDLE_CHECK = timedelta(minutes=5)
ROUNDS_PER_RUN = 200  # then continue as new (each round is about ten history events)
ROUND_TIMEOUT = timedelta(minutes=3)  # a round stops starting sends after 60 s; each send ends within 5 s
ROUND_HEARTBEAT = timedelta(seconds=10)  # a round whose worker died is retried after this
ROUND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


def delivery_workflow_id(subscription_id: str) -> str:
    return f"event-delivery-{subscription_id}"


@workflow.defn
class EventDeliveryWorkflow:
    @workflow.init
    def __init__(self, subscription_id: str) -> None:
        self._woken = False

    @workflow.signal
    def wake(self) -> None:
        """New deliveries are due (or the subscription changed): look now."""
        self._woken = True

    @workflow.run
    async def run(self, subscription_id: str) -> None:
        for _ in range(ROUNDS_PER_RUN):
            self._woken = False  # a signal during the round below means: go again
            done: DeliveryRound = await workflow.execute_activity_method(
                DeliveryActivities.deliver_due,
                subscription_id,
                start_to_close_timeout=ROUND_TIMEOUT,
                heartbeat_timeout=ROUND_HEARTBEAT,
                retry_policy=ROUND_RETRY,
            )
            if done.gone:
                return
            if done.more_due:
                continue
            wait = IDLE_CHECK
            if done.next_due_at is not None:
                wait = min(wait, max(done.next_due_at - workflow.now(), timedelta(milliseconds=100)))
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(lambda: self._woken, timeout=wait)
        workflow.continue_as_new(subscription_id)


async def wake_delivery(client: Client, *, task_queue: str, subscription_id: str) -> None:
    """Signal-with-start: wakes the subscription's delivery workflow, starting it if it is not running."""
    await client.start_workflow(
        EventDeliveryWorkflow.run,
        subscription_id,
        id=delivery_workflow_id(subscription_id),
        task_queue=task_queue,
        start_signal="wake",
    )
