"""The activity that delivers one subscription's due events: one round of sends, every attempt recorded.

Each attempt is recorded in its own transaction as soon as it ends, so a worker that dies mid-round
re-sends at most what was in flight (at least once, with the same `webhook-id`). One customer's events go
out one after another in sequence order; customers, and subscriptions (each its own workflow), in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from pydantic import BaseModel
from temporalio import activity

import db.subscriptions
from db.subscriptions import DueDelivery, Subscription
from domain.deliveries import after_attempt, should_disable
from domain.events import cloud_event_json
from integrations.event_webhooks import WebhookSender
from kit import metrics

log = structlog.get_logger("activities.deliveries")

ROUND_SIZE = 100  # deliveries one batch takes
PARALLEL_CUSTOMERS = 16  # customers whose events are sent at once
BATCH_BUDGET_SECONDS = 60.0  # no new send of a batch starts after this; the rest is the next batch's
ROUND_SECONDS = 60.0  # a round takes new batches for this long, then hands back to the workflow
LINGER_SECONDS = 5.0  # a round with nothing due waits this long for new deliveries before it ends


class DeliveryNotices:
    """The rounds running in this process, by subscription, and how the worker's waker tells them that new
    deliveries are due (instead of signalling their workflow)."""

    def __init__(self) -> None:
        self._listening: dict[str, list[asyncio.Event]] = {}

    def tell(self, subscription_id: str) -> bool:
        """True when a round here will see the new deliveries; False: wake the workflow."""
        events = self._listening.get(subscription_id, [])
        for event in events:
            event.set()
        return bool(events)

    @contextlib.contextmanager
    def listening(self, subscription_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._listening.setdefault(subscription_id, []).append(event)
        try:
            yield event
        finally:
            self._listening[subscription_id].remove(event)
            if not self._listening[subscription_id]:
                del self._listening[subscription_id]


class DeliveryRound(BaseModel):
    """What one round did and what the workflow waits for next."""

    gone: bool = False  # the subscription was deleted: its workflow ends
    attempted: int = 0
    more_due: bool = False  # deliveries are due now: go again at once
    next_due_at: datetime | None = None  # else the earliest retry, if any


class DeliveryActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: WebhookSender,
        *,
        source: str,
        schedule: Sequence[timedelta],
        disable_after: timedelta,
        notices: DeliveryNotices,
    ) -> None:
        self._pool = pool
        self._sender = sender
        self._source = source
        self._schedule = tuple(schedule)
        self._disable_after = disable_after
        self._notices = notices

    @activity.defn
    async def deliver_due(self, subscription_id: str) -> DeliveryRound:
        """Delivers what is due, and what becomes due while it runs (told by the worker's waker), for up to
        ROUND_SECONDS or until nothing has come for LINGER_SECONDS: Temporal's pattern for frequent polling
        (a long activity that heartbeats), which saves a signal, a workflow task and an activity task per
        new event. Once it stops listening, new deliveries wake the workflow instead."""
        attempted = 0
        deadline = time.monotonic() + ROUND_SECONDS
        with self._notices.listening(subscription_id) as notice:
            while True:
                notice.clear()
                async with self._pool.acquire() as conn:
                    subscription = await db.subscriptions.get_subscription(conn, subscription_id)
                    if subscription is None:
                        return DeliveryRound(gone=True, attempted=attempted)
                    if not subscription.enabled:
                        break  # enabling it wakes the workflow
                    due = await db.subscriptions.due_deliveries(conn, subscription_id, limit=ROUND_SIZE)
                    next_due = None if due else await db.subscriptions.next_due_at(conn, subscription_id)
                attempted += await self._deliver(subscription, due)
                activity.heartbeat()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if due:
                    continue
                until_retry = None if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
                retry_soon = until_retry is not None and until_retry <= LINGER_SECONDS
                wait = max(until_retry or 0.0, 0.0) if retry_soon else min(LINGER_SECONDS, left)
                try:
                    async with asyncio.timeout(wait):
                        await notice.wait()
                except TimeoutError:
                    if not retry_soon:
                        break  # nothing came, no retry due soon: the workflow sleeps until one is
        # No longer listening: whatever commits from now on signals the workflow; what committed before is here.
        async with self._pool.acquire() as conn:
            next_due = await db.subscriptions.next_due_at(conn, subscription_id)
        now = datetime.now(UTC)
        return DeliveryRound(
            attempted=attempted, more_due=next_due is not None and next_due <= now, next_due_at=next_due
        )

    async def _deliver(self, subscription: Subscription, due: list[DueDelivery]) -> int:
        """Sends one batch, one customer's events in order, PARALLEL_CUSTOMERS customers at once."""
        deadline = time.monotonic() + BATCH_BUDGET_SECONDS
        outcomes: list[bool] = []
        by_customer = itertools.groupby(sorted(due, key=lambda d: (d.customer_id, d.sequence)), lambda d: d.customer_id)
        slots = asyncio.Semaphore(PARALLEL_CUSTOMERS)

        async def deliver_in_order(deliveries: list[DueDelivery]) -> None:
            async with slots:
                for delivery in deliveries:
                    if time.monotonic() > deadline:
                        return
                    outcomes.append(await self._attempt(subscription, delivery))
                    activity.heartbeat()

        await asyncio.gather(*(deliver_in_order(list(group)) for _, group in by_customer))
        if outcomes:
            await self._note_health(subscription, succeeded=any(outcomes))
        return len(outcomes)

    async def _attempt(self, subscription: Subscription, delivery: DueDelivery) -> bool:
        body = cloud_event_json(
            id=delivery.event_id,
            source=self._source,
            type=delivery.type,
            customer_id=delivery.customer_id,
            time=delivery.time,
            sequence=delivery.sequence,
            data=delivery.data,
        )
        now = datetime.now(UTC)
        attempt = await self._sender.send(
            subscription.url,
            message_id=delivery.event_id,
            body=body,
            secrets=subscription.signing_secrets(now),
            now=now,
        )
        then = after_attempt(
            succeeded=attempt.succeeded, round_attempts=delivery.round_attempts + 1, now=now, schedule=self._schedule
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await db.subscriptions.record_attempt(conn, delivery.id, attempt, then)
        metrics.EVENT_DELIVERY_ATTEMPTS.labels(outcome=then.status.value.lower()).inc()
        if attempt.succeeded:
            metrics.EVENT_DELIVERY_LAG.observe((now - delivery.time).total_seconds() + attempt.latency_ms / 1000)
        else:
            log.info(
                "event delivery failed",
                subscription_id=subscription.id,
                delivery_id=delivery.id,
                event_type=delivery.type,
                status_code=attempt.status_code,
                error=attempt.error,
                next_status=then.status.value,
            )
        return attempt.succeeded

    async def _note_health(self, subscription: Subscription, *, succeeded: bool) -> None:
        """A round with a success clears the endpoint's failing streak; one without extends it, and a streak
        as long as EVENT_DELIVERY_DISABLE_AFTER disables the subscription."""
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            since = await db.subscriptions.note_endpoint_health(conn, subscription.id, succeeded=succeeded, now=now)
            if should_disable(failing_since=since, now=now, after=self._disable_after):
                reason = f"every delivery failed since {since:%Y-%m-%d %H:%M} UTC"
                await db.subscriptions.disable(conn, subscription.id, reason=reason, now=now)
                log.warning("event subscription disabled", subscription_id=subscription.id, reason=reason)
