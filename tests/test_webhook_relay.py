"""A webhook that arrives while Temporal is down is still acknowledged (it is stored first) and reaches
its customer's workflow once Temporal is reachable again; sweeps of several API processes at once deliver
each stored webhook once; a backlog larger than a sweep's batch is delivered by one drain, one customer's
webhooks in the order they arrived."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

import db.inbox
import db.pool
from api.app import create_app
from api.relay import WebhookRelay
from dev.stack import DevStack, free_port
from integrations.sumsub.webhooks import webhook_digest
from kit.settings import Settings
from kit.temporal import connect
from tests.helpers import running_app, settings_of
from tests.support.graphql import register, wait_for_stage


async def test_a_webhook_stored_while_temporal_is_down_is_delivered_when_it_is_back(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    customer = await register(portal, "temporal-down@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(portal, customer["id"], "AWAITING_KYC")
    body = json.dumps(
        {
            "type": "applicantPending",
            "externalUserId": customer["id"],
            "applicantId": waiting["kyc"]["applicantId"],
            "correlationId": f"req-down-{customer['id']}",
            "createdAtMs": "2030-01-01 00:00:00.000",
            "reviewStatus": "pending",
        }
    ).encode()

    # An API whose Temporal is unreachable: it must still store and acknowledge.
    cut_off = Settings(
        database_url=stack.child_env["DATABASE_URL"],
        temporal_address=f"127.0.0.1:{free_port()}",
        keycloak_url=stack.keycloak_url,
        dev_secrets_allowed=True,  # the stack's emulators use the dev values
    )
    attempts = "SELECT attempts FROM sumsub_webhook_inbox WHERE payload->>'correlationId' = $1"
    async with running_app(create_app(cut_off)) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        started = time.monotonic()
        response = await http.post(
            "/webhooks/sumsub",
            content=body,
            headers={"X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret")},
        )
        acknowledged_in = time.monotonic() - started
        # Its deliverers try (and fail) meanwhile: wait until an attempt is noted on the stored row.
        deadline = time.monotonic() + 10
        while not await database.fetchval(attempts, f"req-down-{customer['id']}"):
            assert time.monotonic() < deadline, "the API never tried to deliver the stored webhook"
            await asyncio.sleep(0.1)
    assert response.status_code == 200
    print(f"acknowledged in {acknowledged_in * 1000:.0f} ms with Temporal down")
    row = await database.fetchrow(
        "SELECT delivered_at, attempts, last_error FROM sumsub_webhook_inbox WHERE payload->>'correlationId' = $1",
        f"req-down-{customer['id']}",
    )
    assert row is not None and row["delivered_at"] is None
    assert row["attempts"] >= 1 and "connect" in row["last_error"]  # ops see why it is still pending
    still = await wait_for_stage(portal, customer["id"], "AWAITING_KYC")
    assert still["kyc"]["status"] == "STARTED"

    # The stack's own API (Temporal reachable) sweeps the inbox and delivers it.
    delivered = await wait_for_stage(portal, customer["id"], "KYC_IN_REVIEW", timeout=30)
    assert delivered["kyc"]["status"] == "PENDING"
    assert (
        await database.fetchval(
            "SELECT outcome FROM sumsub_webhook_inbox WHERE payload->>'correlationId' = $1",
            f"req-down-{customer['id']}",
        )
        == "delivered"
    )


async def test_two_sweeps_at_once_deliver_each_stored_webhook_once(stack: DevStack, database: asyncpg.Pool) -> None:
    """Two relays (as two API processes run them) sweep the same inbox at the same moment, beside the stack
    API's own: every row is delivered exactly once (one attempt), none twice, none left."""
    settings = settings_of(stack)
    assert settings.database_url is not None
    run = uuid.uuid4().hex[:8]
    pools = [await db.pool.create_pool(settings.database_url, size=4) for _ in range(2)]
    try:
        ids = []
        for n in range(60):  # for customers that do not exist: each delivery is answered NOT_FOUND and noted
            payload = {
                "type": "applicantPending",
                "externalUserId": str(uuid.uuid4()),
                "applicantId": f"sweep-{run}-{n}",
                "correlationId": f"sweep-{run}-{n}",
                "createdAtMs": "2030-01-01 00:00:00.000",
                "reviewStatus": "pending",
            }
            inbox_id = await db.inbox.store_webhook(pools[0], dedupe_key=f"sweep-{run}-{n}", payload=payload)
            assert inbox_id is not None
            ids.append(inbox_id)
        # Stored a while ago, as rows a sweep exists for are (their own process's queue did not deliver them).
        await database.execute(
            "UPDATE sumsub_webhook_inbox SET received_at = now() - interval '1 minute' WHERE id = any($1)", ids
        )
        temporal = await connect(settings)
        relays = [WebhookRelay(pool=pool, temporal=temporal) for pool in pools]
        settled = await asyncio.gather(*(relay.deliver_pending() for relay in relays))
        deadline = time.monotonic() + 30
        while await database.fetchval(
            "SELECT count(*) FROM sumsub_webhook_inbox WHERE id = any($1) AND delivered_at IS NULL", ids
        ):
            assert time.monotonic() < deadline, "the sweeps left stored webhooks undelivered"
            await asyncio.sleep(0.1)
        rows = await database.fetch(
            "SELECT attempts, outcome FROM sumsub_webhook_inbox WHERE id = any($1) ORDER BY id", ids
        )
        assert [(r["attempts"], r["outcome"]) for r in rows] == [(1, "no_running_workflow")] * len(ids)
        assert sum(settled) <= len(ids)  # the rest, if any, the stack API's own sweep took
        print(f"two sweeps settled {settled} of {len(ids)}")
    finally:
        for pool in pools:
            await pool.close()


@asynccontextmanager
async def inbox_of_its_own(stack: DevStack, database: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """A fresh database on the stack's PostgreSQL, migrated: an inbox no other relay sweeps."""
    settings = settings_of(stack)
    assert settings.database_url is not None
    name = f"relay_drain_{uuid.uuid4().hex[:8]}"
    await database.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(settings.database_url)._replace(path=f"/{name}"))
    await db.pool.migrate(dsn)
    pool = await db.pool.create_pool(dsn, size=8)
    try:
        yield pool
    finally:
        await pool.close()
        await database.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def store_backlog(pool: asyncpg.Pool, customers: list[str], per_customer: int) -> None:
    """Webhooks for customers that have no workflow, stored `per_customer` rounds over `customers`."""
    for n in range(per_customer):
        for customer in customers:
            payload = {
                "type": "applicantPending",
                "externalUserId": customer,
                "applicantId": f"drain-{customer}",
                "correlationId": f"drain-{customer}-{n}",
                "createdAtMs": "2030-01-01 00:00:00.000",
                "reviewStatus": "pending",
            }
            assert await db.inbox.store_webhook(pool, dedupe_key=f"drain-{customer}-{n}", payload=payload)


async def test_a_backlog_larger_than_a_batch_is_drained_at_once_in_order_per_customer(
    stack: DevStack, database: asyncpg.Pool
) -> None:
    """250 stored webhooks, five per customer that has no workflow, are all settled by one drain (a sweep takes
    100), and each customer's five were attempted in the order they were stored."""
    async with inbox_of_its_own(stack, database) as pool:
        customers = [str(uuid.uuid4()) for _ in range(50)]
        await store_backlog(pool, customers, 5)
        relay = WebhookRelay(pool=pool, temporal=await connect(settings_of(stack)))
        assert await relay.drain() == 250
        rows = await pool.fetch("SELECT id, external_user_id, outcome, delivered_at FROM sumsub_webhook_inbox")
        assert len(rows) == 250 and {(r["outcome"], r["delivered_at"] is not None) for r in rows} == {
            ("no_running_workflow", True)
        }
        for customer in customers:
            mine = sorted((r for r in rows if r["external_user_id"] == customer), key=lambda r: r["id"])
            assert [r["delivered_at"] for r in mine] == sorted(r["delivered_at"] for r in mine)


async def test_a_drain_while_temporal_is_unreachable_tries_one_batch_and_stops(
    stack: DevStack, database: asyncpg.Pool
) -> None:
    """A failed row stays pending for the next interval: the drain does not take it again and again."""
    async with inbox_of_its_own(stack, database) as pool:
        await store_backlog(pool, [str(uuid.uuid4()) for _ in range(150)], 1)
        cut_off = settings_of(stack).model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
        relay = WebhookRelay(pool=pool, temporal=await connect(cut_off, lazy=True))
        assert await relay.drain() == 0
        attempts = [r["attempts"] for r in await pool.fetch("SELECT attempts FROM sumsub_webhook_inbox ORDER BY id")]
        assert attempts == [1] * 100 + [0] * 50
        assert await pool.fetchval("SELECT count(*) FROM sumsub_webhook_inbox WHERE delivered_at IS NULL") == 150
