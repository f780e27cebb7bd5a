"""Delivers stored Sumsub webhooks from the inbox to their customers' workflows.

The webhook endpoint answers 200 once a webhook is stored and hands it to this relay's queue, so
Sumsub never waits on Temporal. A few deliverers drain the queue; a sweep redelivers whatever is still
pending (Temporal was down, the queue was full, the process died) until it lands.

Every API process runs a relay. A stored row is leased to the process that stored it (`LEASE_SECONDS`);
its deliverers leave a queued webhook whose lease is nearly over to the sweep, and a sweep leases the
rows it takes (`FOR UPDATE SKIP LOCKED`), so no two processes deliver the same row at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

import db.inbox
from api.errors import BadUserInput, Conflict, NotFound
from domain.customer import workflow_id_for
from integrations.sumsub.webhooks import DEFAULT_EVENT_TIME_TOLERANCE, kyc_event_from_webhook
from kit.codec import DataKeyErased, PayloadDecryptionError
from workflows.customer import CustomerWorkflow

log = structlog.get_logger("relay")

SWEEP_INTERVAL_SECONDS = 5.0
LEASE_SECONDS = 30.0
# A queued webhook with less of its lease left than this is left to a sweep: a delivery (its signal is
# bounded by SIGNAL_TIMEOUT) must end while the lease still holds.
LEASE_MARGIN_SECONDS = 10.0
SIGNAL_TIMEOUT = timedelta(seconds=5)
DELIVERERS = 4
SWEEP_BATCH = 100
QUEUE_SIZE = 10_000
MAX_UNDELIVERABLE_PAGE = 500


@dataclass(frozen=True)
class StoredWebhook:
    inbox_id: int
    payload: dict[str, Any]
    dedupe_key: str
    received_at: datetime
    # time.monotonic() when this process's lease of the row ends; None: not leased (ops' replay)
    lease_ends: float | None = None

    def lease_nearly_over(self) -> bool:
        """Too little of the lease is left for a delivery (bounded by SIGNAL_TIMEOUT): a sweep takes the row."""
        return self.lease_ends is not None and time.monotonic() > self.lease_ends - LEASE_MARGIN_SECONDS


class WebhookRelay:
    def __init__(
        self, *, pool: asyncpg.Pool, temporal: Client, event_time_tolerance: timedelta = DEFAULT_EVENT_TIME_TOLERANCE
    ) -> None:
        self._pool = pool
        self._temporal = temporal
        self._event_time_tolerance = event_time_tolerance
        self._queue: asyncio.Queue[StoredWebhook] = asyncio.Queue(maxsize=QUEUE_SIZE)

    def submit(self, webhook: StoredWebhook) -> None:
        """Queues a stored webhook for delivery; when the queue is full the sweep delivers it later."""
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(webhook)

    async def deliver(self, webhook: StoredWebhook) -> bool:
        """Signals the customer's workflow; True when the row is settled (delivered or undeliverable)."""
        inbox_id, payload = webhook.inbox_id, webhook.payload
        if payload.get("erased") is True:  # tombstoned by an erasure before it was delivered
            await db.inbox.settle_erased(self._pool, inbox_id)
            return True
        event = kyc_event_from_webhook(
            payload,
            dedupe_key=webhook.dedupe_key,
            received_at=webhook.received_at,
            time_tolerance=self._event_time_tolerance,
        )
        customer_id = payload["externalUserId"]
        handle = self._temporal.get_workflow_handle(workflow_id_for(customer_id))
        try:
            await handle.signal(CustomerWorkflow.kyc_event, event, rpc_timeout=SIGNAL_TIMEOUT)
        except DataKeyErased:
            # The customer was erased (Sumsub's applicantDeactivated for the erasure itself comes after it):
            # nothing can be sealed for them, no workflow takes it, and its body must not stay.
            await db.inbox.settle_erased(self._pool, inbox_id)
            log.info("webhook for an erased customer settled", inbox_id=inbox_id, sumsub_type=event.sumsub_type)
            return True
        except PayloadDecryptionError as exc:  # a master key missing from this process's settings
            await db.inbox.mark_webhook(self._pool, inbox_id, outcome=None, error=str(exc)[:500])
            log.warning("webhook could not be encrypted; will retry", inbox_id=inbox_id, error=str(exc))
            return False
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                if await db.inbox.is_erased(self._pool, customer_id):  # without per-customer keys
                    await db.inbox.settle_erased(self._pool, inbox_id)
                    return True
                # No such customer, or its workflow has finished: acknowledged and kept for ops.
                await db.inbox.mark_webhook(self._pool, inbox_id, outcome="no_running_workflow", error=exc.message)
                log.warning("webhook for no running workflow", inbox_id=inbox_id, sumsub_type=event.sumsub_type)
                return True
            await db.inbox.mark_webhook(self._pool, inbox_id, outcome=None, error=f"{exc.status.name}: {exc.message}")
            log.warning("webhook delivery failed; will retry", inbox_id=inbox_id, error=exc.message)
            return False
        except RuntimeError as exc:  # what the SDK raises while it cannot connect to Temporal at all
            await db.inbox.mark_webhook(self._pool, inbox_id, outcome=None, error=str(exc)[:500])
            log.warning("Temporal unreachable; webhook stays in the inbox", inbox_id=inbox_id)
            return False
        await db.inbox.mark_webhook(self._pool, inbox_id, outcome="delivered")
        return True

    async def undeliverable(self, first: int) -> list[db.inbox.InboxEntry]:
        """Stored webhooks no workflow took, that were refused, or whose delivery keeps failing."""
        if not 1 <= first <= MAX_UNDELIVERABLE_PAGE:
            raise BadUserInput(f"first must be between 1 and {MAX_UNDELIVERABLE_PAGE}", field="first")
        return await db.inbox.undeliverable_webhooks(self._pool, limit=first)

    async def replay(self, inbox_id: int) -> db.inbox.InboxEntry:
        """Delivers a stored webhook to its customer's workflow again (ops); returns the row after it."""
        entry = await db.inbox.get_webhook(self._pool, inbox_id)
        if entry is None:
            raise NotFound("no stored webhook with this id")
        if entry.outcome and entry.outcome.startswith("rejected"):
            raise Conflict("a webhook refused as invalid cannot be delivered")
        if entry.outcome == db.inbox.ERASED_OUTCOME or entry.payload.get("erased") is True:
            raise Conflict("the webhook's customer was erased: only its type is kept, and it cannot be delivered")
        await self.deliver(StoredWebhook(entry.id, entry.payload, entry.dedupe_key, entry.received_at))
        updated = await db.inbox.get_webhook(self._pool, inbox_id)
        assert updated is not None
        return updated

    async def deliver_pending(self) -> int:
        """One sweep over the inbox (the rows it could lease); returns how many rows were settled."""
        return (await self._sweep())[1]

    async def drain(self) -> int:
        """Sweeps again while a sweep took a full batch and settled all of it (a backlog after an outage or a
        storm is delivered at once, not a batch per interval); a row that failed waits for the next interval,
        so a Temporal outage or a row that keeps failing never spins. Returns how many rows were settled."""
        settled = 0
        while True:
            taken, done = await self._sweep()
            settled += done
            if taken < SWEEP_BATCH or done < taken:
                return settled

    async def _sweep(self) -> tuple[int, int]:
        """Leases up to SWEEP_BATCH pending rows and delivers them: one customer's in order (as they arrived),
        DELIVERERS customers at a time. (rows taken, rows settled)."""
        rows = await db.inbox.lease_pending_webhooks(self._pool, lease_seconds=LEASE_SECONDS, limit=SWEEP_BATCH)
        lease_ends = time.monotonic() + LEASE_SECONDS
        by_customer: dict[object, list[StoredWebhook]] = {}
        for row in rows:
            payload = row["payload"]
            customer = payload.get("externalUserId") if isinstance(payload, dict) else None
            webhook = StoredWebhook(row["id"], payload, row["dedupe_key"], row["received_at"], lease_ends)
            by_customer.setdefault(customer, []).append(webhook)
        slots = asyncio.Semaphore(DELIVERERS)

        async def in_order(webhooks: list[StoredWebhook]) -> int:
            async with slots:
                return sum([await self._sweep_one(webhook) for webhook in webhooks])

        async with asyncio.TaskGroup() as group:
            settled = [group.create_task(in_order(webhooks)) for webhooks in by_customer.values()]
        return len(rows), sum(task.result() for task in settled)

    async def _sweep_one(self, webhook: StoredWebhook) -> bool:
        if webhook.lease_nearly_over():
            return False  # the lease is nearly over (slow deliveries ahead of it): a later sweep takes the row
        try:
            return await self.deliver(webhook)
        except (KeyError, TypeError, ValueError) as exc:
            # A row that cannot become a KYC event must not block every row after it.
            await db.inbox.mark_webhook(self._pool, webhook.inbox_id, outcome=f"rejected: {exc!r}"[:200])
            return False
        except (asyncpg.PostgresConnectionError, OSError):
            raise  # PostgreSQL is gone: the whole sweep waits for the next round
        except Exception as exc:  # noqa: BLE001  (nor must any other failure of one row: it stays pending)
            log.warning("webhook delivery failed; the sweep retries it", inbox_id=webhook.inbox_id, error=repr(exc))
            await db.inbox.mark_webhook(self._pool, webhook.inbox_id, outcome=None, error=repr(exc)[:500])
            return False

    async def _deliver_queued(self) -> None:
        while True:
            webhook = await self._queue.get()
            if webhook.lease_nearly_over():
                continue  # queued too long: a sweep may take the row now, and delivers it
            try:
                await self.deliver(webhook)
            except Exception as exc:  # noqa: BLE001  (the relay must outlive any failure; the sweep retries)
                log.warning("webhook delivery failed; the sweep retries it", inbox_id=webhook.inbox_id, error=repr(exc))

    async def run(self) -> None:
        """Delivers queued webhooks and sweeps the inbox every few seconds until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(DELIVERERS):
                group.create_task(self._deliver_queued())
            while True:
                await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
                try:
                    await self.drain()
                except Exception as exc:  # noqa: BLE001  (same: try again at the next sweep)
                    log.warning("inbox sweep failed", error=repr(exc))
