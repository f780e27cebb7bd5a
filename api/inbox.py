"""The API's side of the Sumsub webhook inbox: telling the relays that webhooks were stored, and what ops do
with stored webhooks (list those no workflow took, deliver one again).

The relays themselves run in the workers (`integrations/sumsub/relay.py`), so the process answering Sumsub
spends nothing on Temporal. The notice is sent after the webhook's commit, never before: a relay that reads on
a notice finds the row. Notices are folded (one NOTIFY per `NOTICE_INTERVAL_SECONDS` at most, under a storm);
one lost with a dying process costs a relay's sweep interval, not the webhook.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

import db.inbox
from api.errors import BadUserInput, Conflict, NotFound
from integrations.sumsub.relay import INBOX_CHANNEL, StoredWebhook, WebhookRelay

log = structlog.get_logger("api.inbox")

NOTICE_INTERVAL_SECONDS = 0.02
MAX_UNDELIVERABLE_PAGE = 500


class WebhookInbox:
    def __init__(self, *, pool: asyncpg.Pool, relay: WebhookRelay) -> None:
        self._pool = pool
        self._relay = relay
        self._stored = asyncio.Event()

    def stored(self) -> None:
        """A webhook was committed to the inbox: the relays are told soon (folded with others)."""
        self._stored.set()

    async def run(self) -> None:
        """Sends the notices until cancelled."""
        while True:
            await self._stored.wait()
            self._stored.clear()
            try:
                await self._pool.execute("SELECT pg_notify($1, '')", INBOX_CHANNEL)
            except Exception as exc:  # noqa: BLE001  (the relays' sweep finds the rows all the same)
                log.warning("relays not told of stored webhooks", error_type=type(exc).__name__)
            await asyncio.sleep(NOTICE_INTERVAL_SECONDS)

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
        if entry.outcome == db.inbox.ERASED_OUTCOME or db.inbox.is_tombstone(entry.payload):
            raise Conflict("the webhook's customer was erased: only its type is kept, and it cannot be delivered")
        await self._relay.deliver([StoredWebhook(entry.id, entry.payload, entry.dedupe_key, entry.received_at)])
        updated = await db.inbox.get_webhook(self._pool, inbox_id)
        assert updated is not None
        return updated
