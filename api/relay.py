"""Delivers stored Sumsub webhooks from the inbox to their customers' workflows.

The webhook endpoint answers 200 once a webhook is stored; this relay delivers it right after, and a
sweep redelivers whatever is still pending (Temporal was down, the process died) until it lands.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from lifecycle import db
from lifecycle.kyc_events import kyc_event_from_webhook
from lifecycle.models import workflow_id_for
from workflows.customer import CustomerWorkflow

log = structlog.get_logger("relay")

SWEEP_INTERVAL_SECONDS = 5.0


class WebhookRelay:
    def __init__(self, *, pool: asyncpg.Pool, temporal: Client) -> None:
        self._pool = pool
        self._temporal = temporal

    async def deliver(self, inbox_id: int, payload: dict[str, Any], dedupe_key: str, received_at: datetime) -> bool:
        """Signals the customer's workflow; True when the row is settled (delivered or undeliverable)."""
        event = kyc_event_from_webhook(payload, dedupe_key=dedupe_key, received_at=received_at)
        handle = self._temporal.get_workflow_handle(workflow_id_for(payload["externalUserId"]))
        try:
            await handle.signal(CustomerWorkflow.kyc_event, event)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                # No such customer, or its workflow has finished: acknowledged and kept for ops.
                await db.mark_webhook(self._pool, inbox_id, outcome="no_running_workflow", error=exc.message)
                log.warning("webhook for no running workflow", inbox_id=inbox_id, sumsub_type=event.sumsub_type)
                return True
            await db.mark_webhook(self._pool, inbox_id, outcome=None, error=f"{exc.status.name}: {exc.message}")
            log.warning("webhook delivery failed; will retry", inbox_id=inbox_id, error=exc.message)
            return False
        await db.mark_webhook(self._pool, inbox_id, outcome="delivered")
        return True

    async def deliver_pending(self) -> int:
        """One sweep over the inbox; returns how many rows were settled."""
        settled = 0
        for row in await db.pending_webhooks(self._pool):
            if await self.deliver(row["id"], row["payload"], row["dedupe_key"], row["received_at"]):
                settled += 1
        return settled

    async def run(self) -> None:
        """Sweeps the inbox every few seconds until cancelled."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                await self.deliver_pending()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("inbox sweep failed", error=str(exc))
