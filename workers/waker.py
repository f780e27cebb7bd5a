"""Turns PostgreSQL's NOTIFY about new event deliveries into a notice to the subscription's delivery round
running in this process, or else into a `wake` signal of its delivery workflow.

The notice is sent by the transaction that wrote the event, on commit (db.events.append), so it never
announces a delivery that does not exist. A notice sent while no waker listened is not lost work: on
every (re)connection the waker wakes every enabled subscription once, and each delivery workflow also
looks on its own timer. Notices for one subscription that arrive while its signal is on the way are
folded into one more signal. Several workers' wakers signal the same workflows: harmless.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from temporalio.client import Client

import db.subscriptions
from activities.deliveries import DeliveryNotices
from db.events import DELIVERIES_CHANNEL
from db.pool import DATABASE_OUTAGES
from workflows.delivery import wake_delivery

log = structlog.get_logger("worker.waker")

RECONNECT_DELAY_SECONDS = 1.0
_CONNECTION_LOST: tuple[type[BaseException], ...] = (*DATABASE_OUTAGES, asyncpg.PostgresError)


class DeliveryWaker:
    def __init__(self, dsn: str, client: Client, *, task_queue: str, notices: DeliveryNotices) -> None:
        self._dsn = dsn
        self._notices = notices
        self._client = client
        self._task_queue = task_queue
        self._pending: set[str] = set()
        self._kick = asyncio.Event()

    async def run(self) -> None:
        """Listens and signals until cancelled, reconnecting to PostgreSQL after a loss."""
        signaller = asyncio.create_task(self._signal_pending())
        try:
            while True:
                try:
                    await self._listen()
                except _CONNECTION_LOST as exc:
                    log.warning("delivery waker lost PostgreSQL; reconnecting", error_type=type(exc).__name__)
                await asyncio.sleep(RECONNECT_DELAY_SECONDS)
        finally:
            signaller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await signaller

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(DELIVERIES_CHANNEL, lambda _c, _pid, _channel, payload: self._want(payload))
            for subscription_id in await db.subscriptions.enabled_subscription_ids(conn):  # what we missed
                self._want(subscription_id)
            await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _want(self, subscription_id: str) -> None:
        if self._notices.tell(subscription_id):
            return  # a round in this process is listening: it sends them without a signal
        self._pending.add(subscription_id)
        self._kick.set()

    async def _signal_pending(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            wanted, self._pending = list(self._pending), set()
            results = await asyncio.gather(*(self._wake(subscription_id) for subscription_id in wanted))
            for subscription_id, ok in zip(wanted, results, strict=True):
                if not ok:  # Temporal unreachable: keep it and try again shortly
                    self._want(subscription_id)
            if not all(results):
                await asyncio.sleep(RECONNECT_DELAY_SECONDS)

    async def _wake(self, subscription_id: str) -> bool:
        try:
            await wake_delivery(self._client, task_queue=self._task_queue, subscription_id=subscription_id)
        except Exception as exc:  # an RPC failure must not end the waker; the signal is retried
            log.warning("delivery workflow not woken; retrying", subscription_id=subscription_id, error=repr(exc))
            return False
        return True
