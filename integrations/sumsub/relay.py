"""Delivers stored Sumsub webhooks from the inbox to their customers' workflows; it runs in the worker.

The API answers Sumsub once a webhook is stored and then tells the relays so (a NOTIFY on `INBOX_CHANNEL`,
sent after the commit and folded under load, `api/inbox.py`), so neither Sumsub nor the answering process
waits on Temporal or on the customer's workflow. A relay drains the inbox on each notice and, for whatever a
notice missed (a relay that was reconnecting, an API that died between commit and notice, a failed delivery
whose retry time came), every `SWEEP_INTERVAL_SECONDS`.

Every worker runs a relay. A drain leases the rows it takes (`FOR UPDATE SKIP LOCKED`, for `LEASE_SECONDS`),
so no two relays deliver the same row at once, and delivers each customer's webhooks in its batch in one signal
(`kyc_events`, in the order they arrived), `DELIVERERS` customers at a time: a storm costs Temporal a signal
per customer and sweep, not one per webhook. (Two workers' batches may hold webhooks of one customer: the
workflow orders events by their own time, `domain/kyc_rules.oldest_first`, not by arrival.)
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
from domain.customer import workflow_id_for
from domain.kyc import KycEvent
from domain.kyc_rules import REMEMBERED_EVENTS
from integrations.sumsub.webhooks import DEFAULT_EVENT_TIME_TOLERANCE, kyc_event_from_webhook
from kit.codec import DataKeyErased, PayloadDecryptionError
from workflows.customer import CustomerWorkflow

log = structlog.get_logger("relay")

SWEEP_INTERVAL_SECONDS = 5.0
# Drains start at most this often: a storm's notices fold into fewer, larger drains, and each customer's
# webhooks of that time go in one signal (a lone webhook after a quiet spell is drained at once). After a drain
# of STORM_ROWS or more, the next waits longer: every signal costs Temporal about a dozen history events of the
# customer's workflow, whatever it carries, and the storm's intake shares the machine.
DRAIN_INTERVAL_SECONDS = 0.5
STORM_DRAIN_INTERVAL_SECONDS = 3.0
STORM_ROWS = 100
RECONNECT_DELAY_SECONDS = 1.0
LEASE_SECONDS = 30.0
# A leased webhook with less of its lease left than this is left to a later drain: a delivery (its signal is
# bounded by SIGNAL_TIMEOUT) must end while the lease still holds.
LEASE_MARGIN_SECONDS = 10.0
SIGNAL_TIMEOUT = timedelta(seconds=5)
DELIVERERS = 4
SWEEP_BATCH = 10_000
# Events per signal at most (the setting SUMSUB_RELAY_SIGNAL_EVENTS): a signal's payload stays far below
# Temporal's 2 MB limit (about 60 KB), and a batch signalled again after a crash is within what the workflow
# remembers (kyc_rules.REMEMBERED_EVENTS), so it is recognised whole as duplicates.
SIGNAL_EVENTS = REMEMBERED_EVENTS
INBOX_CHANNEL = "sumsub_inbox"  # NOTIFY (empty payload): webhooks were stored


@dataclass(frozen=True)
class StoredWebhook:
    inbox_id: int
    payload: dict[str, Any]
    dedupe_key: str
    received_at: datetime
    # time.monotonic() when this relay's lease of the row ends; None: not leased (ops' replay)
    lease_ends: float | None = None
    # What a sweep made of the row once (None: a tombstone or a row that cannot become a KYC event)
    event: KycEvent | None = None

    def lease_nearly_over(self) -> bool:
        """Too little of the lease is left for a delivery (bounded by SIGNAL_TIMEOUT): a sweep takes the row."""
        return self.lease_ends is not None and time.monotonic() > self.lease_ends - LEASE_MARGIN_SECONDS


class WebhookRelay:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        temporal: Client,
        event_time_tolerance: timedelta = DEFAULT_EVENT_TIME_TOLERANCE,
        sweep_interval: float = SWEEP_INTERVAL_SECONDS,
        drain_intervals: tuple[float, float] = (DRAIN_INTERVAL_SECONDS, STORM_DRAIN_INTERVAL_SECONDS),
        sweep_batch: int = SWEEP_BATCH,
        signal_events: int = SIGNAL_EVENTS,
    ) -> None:
        self._pool = pool
        self._sweep_batch = sweep_batch
        self._signal_events = signal_events
        self._sweep_interval = sweep_interval
        self._drain_intervals = drain_intervals
        self._temporal = temporal
        self._event_time_tolerance = event_time_tolerance
        self._stored = asyncio.Event()  # a notice came: webhooks were stored
        self._stopping = False

    async def deliver(self, webhooks: list[StoredWebhook]) -> bool:
        """Signals one customer's workflow with these webhooks, in this order, in one signal; True when the rows
        are settled (delivered or undeliverable). KeyError, TypeError or ValueError: a row cannot become a KYC
        event (and nothing was sent)."""
        tombstones = [w.inbox_id for w in webhooks if db.inbox.is_tombstone(w.payload)]
        if tombstones:  # tombstoned by an erasure before they were delivered
            await db.inbox.settle_erased(self._pool, tombstones)
        webhooks = [w for w in webhooks if not db.inbox.is_tombstone(w.payload)]
        if not webhooks:
            return True
        events = [
            webhook.event or self._kyc_event(webhook.payload, webhook.dedupe_key, webhook.received_at)
            for webhook in webhooks
        ]
        inbox_ids = [webhook.inbox_id for webhook in webhooks]
        customer_id = webhooks[0].payload["externalUserId"]
        handle = self._temporal.get_workflow_handle(workflow_id_for(customer_id))
        try:
            if len(events) == 1:  # the signal every worker version knows
                await handle.signal(CustomerWorkflow.kyc_event, events[0], rpc_timeout=SIGNAL_TIMEOUT)
            else:
                await handle.signal(CustomerWorkflow.kyc_events, events, rpc_timeout=SIGNAL_TIMEOUT)
        except DataKeyErased:
            # The customer was erased (Sumsub's applicantDeactivated for the erasure itself comes after it):
            # nothing can be sealed for them, no workflow takes it, and its body must not stay.
            await db.inbox.settle_erased(self._pool, inbox_ids)
            log.info("webhooks for an erased customer settled", count=len(inbox_ids))
            return True
        except PayloadDecryptionError as exc:  # a master key missing from this process's settings
            await db.inbox.mark_webhooks(self._pool, inbox_ids, outcome=None, error=str(exc)[:500])
            log.warning("webhooks could not be encrypted; will retry", count=len(inbox_ids), error=str(exc))
            return False
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                if await db.inbox.is_erased(self._pool, customer_id):  # without per-customer keys
                    await db.inbox.settle_erased(self._pool, inbox_ids)
                    return True
                # Its workflow has finished (or there is no such customer): acknowledged and kept for ops.
                await db.inbox.settle_without_workflow(self._pool, inbox_ids, error=exc.message)
                log.warning("webhooks for no running workflow", count=len(inbox_ids))
                return True
            error = f"{exc.status.name}: {exc.message}"
            await db.inbox.mark_webhooks(self._pool, inbox_ids, outcome=None, error=error)
            log.warning("webhook delivery failed; will retry", count=len(inbox_ids), error=exc.message)
            return False
        except RuntimeError as exc:  # what the SDK raises while it cannot connect to Temporal at all
            await db.inbox.mark_webhooks(self._pool, inbox_ids, outcome=None, error=str(exc)[:500])
            log.warning("Temporal unreachable; webhooks stay in the inbox", count=len(inbox_ids))
            return False
        await db.inbox.mark_webhooks(self._pool, inbox_ids, outcome="delivered")
        return True

    async def drain(self) -> int:
        """Sweeps again while a sweep took a full batch and settled all of it (a backlog after an outage or a
        storm is delivered at once, not a batch per interval); after a sweep with a failed row it stops, and the
        failed rows wait for their retry time, so a Temporal outage never spins. Returns how many rows were
        settled."""
        settled = 0
        while True:
            taken, done = await self._sweep()
            settled += done
            if taken < self._sweep_batch or done < taken or self._stopping:
                return settled

    async def _sweep(self) -> tuple[int, int]:
        """Leases up to a sweep batch of pending rows and delivers them: one customer's in order (as they arrived),
        DELIVERERS customers at a time. (rows taken, rows settled)."""
        lease_ends = time.monotonic() + LEASE_SECONDS  # taken before the lease, so never later than its end
        rows = await db.inbox.lease_pending_webhooks(self._pool, lease_seconds=LEASE_SECONDS, limit=self._sweep_batch)
        by_customer: dict[object, list[StoredWebhook]] = {}
        for row in rows:
            payload = row["payload"]
            customer = payload.get("externalUserId") if isinstance(payload, dict) else None
            dedupe_key, received_at = row["dedupe_key"], row["received_at"]
            event = self._event_of(payload, dedupe_key, received_at)
            webhook = StoredWebhook(row["id"], payload, dedupe_key, received_at, lease_ends, event)
            by_customer.setdefault(customer, []).append(webhook)
        settled = await self._settle_unknown(by_customer)
        slots = asyncio.Semaphore(DELIVERERS)

        async def in_order(webhooks: list[StoredWebhook]) -> int:
            """The customer's KYC events in one signal (`signal_events` at most); a tombstone or a malformed row
            on its own."""
            deliverable: list[StoredWebhook] = []
            alone: list[StoredWebhook] = []
            for webhook in webhooks:
                (deliverable if webhook.event is not None else alone).append(webhook)
            size = self._signal_events
            signals = [deliverable[i : i + size] for i in range(0, len(deliverable), size)]
            chunks = [*signals, *([webhook] for webhook in alone)]
            async with slots:
                return sum([len(chunk) for chunk in chunks if await self._sweep_some(chunk)])

        async with asyncio.TaskGroup() as group:
            delivered = [group.create_task(in_order(webhooks)) for webhooks in by_customer.values()]
        return len(rows), settled + sum(task.result() for task in delivered)

    async def _settle_unknown(self, by_customer: dict[object, list[StoredWebhook]]) -> int:
        """Settles, in one statement and without asking Temporal, the webhooks for ids no customer ever had
        (a customer's row is written before its applicant exists, and an erased one keeps a tombstone): what a
        signal would have found no workflow for. Removes them from `by_customer`; returns how many."""
        ids = [customer for customer in by_customer if isinstance(customer, str)]
        known = await db.inbox.existing_customers(self._pool, ids)
        unknown: list[int] = []
        for customer in ids:
            if customer in known:
                continue
            # Tombstones and rows that cannot become a KYC event keep their own way through `deliver`.
            webhooks, by_customer[customer] = by_customer[customer], []
            for webhook in webhooks:
                if webhook.event is not None:
                    unknown.append(webhook.inbox_id)
                else:
                    by_customer[customer].append(webhook)
        if unknown:
            await db.inbox.settle_without_workflow(self._pool, unknown, error="no customer with this id")
            log.warning("webhooks for no customer", count=len(unknown))
        return len(unknown)

    def _kyc_event(self, payload: dict[str, Any], dedupe_key: str, received_at: datetime) -> KycEvent:
        """What the workflow is signalled; KeyError, TypeError or ValueError for a row that cannot become one."""
        return kyc_event_from_webhook(
            payload, dedupe_key=dedupe_key, received_at=received_at, time_tolerance=self._event_time_tolerance
        )

    def _event_of(self, payload: Any, dedupe_key: str, received_at: datetime) -> KycEvent | None:
        """The KYC event of a row, or None for a tombstone or a row that cannot become one."""
        if db.inbox.is_tombstone(payload):
            return None
        try:
            return self._kyc_event(payload, dedupe_key, received_at)
        except (KeyError, TypeError, ValueError):
            return None

    async def _sweep_some(self, webhooks: list[StoredWebhook]) -> bool:
        inbox_ids = [webhook.inbox_id for webhook in webhooks]
        if webhooks[0].lease_nearly_over():  # one lease for the batch
            return False  # the lease is nearly over (slow deliveries ahead of it): a later sweep takes the rows
        try:
            return await self.deliver(webhooks)
        except (KeyError, TypeError, ValueError) as exc:
            # A row that cannot become a KYC event (alone: see _sweep) must not block every row after it.
            await db.inbox.mark_webhooks(self._pool, inbox_ids, outcome=f"rejected: {exc!r}"[:200])
            return True
        except (asyncpg.PostgresConnectionError, OSError):
            raise  # PostgreSQL is gone: the whole sweep waits for the next round
        except Exception as exc:  # noqa: BLE001  (nor must any other failure of one delivery: its rows stay pending)
            log.warning("webhook delivery failed; the sweep retries it", inbox_ids=inbox_ids, error=repr(exc))
            await db.inbox.mark_webhooks(self._pool, inbox_ids, outcome=None, error=repr(exc)[:500])
            return False

    async def run(self, dsn: str) -> None:
        """Drains the inbox on every notice that webhooks were stored (at most once per drain interval, longer in
        a storm) and every sweep interval, until `stop()` (the drain under way ends first) or cancellation. A row
        whose delivery failed waits for its retry time (db.inbox.mark_webhooks), so a storm of notices during an
        outage does not retry the same rows in a loop."""
        listener = asyncio.create_task(self._listen_forever(dsn))
        next_drain = 0.0
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stored.wait(), self._sweep_interval)
                self._stored.clear()
                if self._stopping:
                    break
                await asyncio.sleep(next_drain - time.monotonic())
                if self._stopping:
                    break
                started = time.monotonic()
                try:
                    settled = await self.drain()
                    next_drain = started + self._drain_intervals[settled >= STORM_ROWS]
                except Exception as exc:  # noqa: BLE001  (PostgreSQL gone, say: the relay outlives it and tries again)
                    log.warning("inbox drain failed", error_type=type(exc).__name__)
                    await asyncio.sleep(self._sweep_interval)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def stop(self) -> None:
        """Ends `run` once the drain under way (if any) has settled what it took."""
        self._stopping = True
        self._stored.set()

    async def _listen_forever(self, dsn: str) -> None:
        while True:
            try:
                await self._listen(dsn)
            except Exception as exc:  # noqa: BLE001  (any failure of the listening connection: listen again)
                log.warning("relay not listening; trying again", error_type=type(exc).__name__)
            await asyncio.sleep(RECONNECT_DELAY_SECONDS)

    async def _listen(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(INBOX_CHANNEL, lambda *_notice: self._stored.set())
            self._stored.set()  # what was stored while nobody listened
            await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
