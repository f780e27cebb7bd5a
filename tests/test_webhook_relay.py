"""The API stores a webhook and tells the relays (in the workers), which deliver it: an API whose Temporal is
down still acknowledges; the API's notice makes a relay drain at once; a relay whose Temporal is down keeps
the rows pending and delivers them once it answers; sweeps of several relays at once settle each stored
webhook once; a backlog larger than a sweep's batch is delivered by one drain, one customer's webhooks in
the order they arrived; a customer's webhooks in one sweep go in one signal; webhooks for ids no customer
ever had are settled without Temporal."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

import db.customers
import db.inbox
import db.pool
from api.app import create_app
from dev.stack import DevStack, free_port
from domain.customer import CustomerType, OnboardingStage, workflow_id_for
from domain.state import CustomerState, Registration
from integrations.sumsub.relay import WebhookRelay
from integrations.sumsub.webhooks import webhook_digest
from kit.settings import Settings
from kit.temporal import connect
from tests.helpers import running_app
from tests.support.graphql import register, wait_for_stage


async def test_a_webhook_acknowledged_while_temporal_is_down_is_delivered_by_a_workers_relay(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    """The API only stores and tells the relays: with its Temporal unreachable it still acknowledges, and the
    stack worker's relay delivers the webhook, once."""
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
    cut_off = Settings(
        database_url=stack.child_env["DATABASE_URL"],
        temporal_address=f"127.0.0.1:{free_port()}",
        keycloak_url=stack.keycloak_url,
        dev_secrets_allowed=True,  # the stack's emulators use the dev values
    )
    async with running_app(create_app(cut_off)) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        started = time.monotonic()
        response = await http.post(
            "/webhooks/sumsub",
            content=body,
            headers={"X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret")},
        )
        acknowledged_in = time.monotonic() - started
        assert response.status_code == 200
        delivered = await wait_for_stage(portal, customer["id"], "KYC_IN_REVIEW", timeout=30)
    print(f"acknowledged in {acknowledged_in * 1000:.0f} ms with the API's Temporal down")
    assert delivered["kyc"]["status"] == "PENDING"
    row = await database.fetchrow(
        "SELECT outcome, attempts FROM sumsub_webhook_inbox WHERE payload->>'correlationId' = $1",
        f"req-down-{customer['id']}",
    )
    assert row is not None and (row["outcome"], row["attempts"]) == ("delivered", 1)


async def test_two_relays_at_once_settle_each_stored_webhook_once(stack: DevStack, database: asyncpg.Pool) -> None:
    """Two relays (as two workers run them) drain the same inbox at the same moment: every row is signalled
    (Temporal answers NOT_FOUND: the customers' workflows have finished) and settled exactly once, none twice,
    none left."""
    async with inbox_of_its_own(stack, database) as (pool, _dsn):
        await store_backlog(pool, [str(uuid.uuid4()) for _ in range(60)], 1)
        temporal = await connect(stack.settings())
        relays = [WebhookRelay(pool=pool, temporal=temporal) for _ in range(2)]
        settled = await asyncio.gather(*(relay.drain() for relay in relays))
        rows = await pool.fetch("SELECT attempts, outcome FROM sumsub_webhook_inbox ORDER BY id")
        assert [(r["attempts"], r["outcome"]) for r in rows] == [(1, "no_running_workflow")] * 60
        assert sum(settled) == 60
        print(f"two relays settled {settled} of 60")


async def test_a_customers_webhooks_in_one_sweep_reach_its_workflow_in_one_signal_each_applied_once(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    """A storm into one customer: the webhooks a sweep took for it go in one signal (one history event and one
    workflow task, not one each), and the workflow records every one of them, once."""
    customer = await register(portal, f"one-signal-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(portal, customer["id"], "AWAITING_KYC")
    async with inbox_of_its_own(stack, database) as (pool, _dsn):
        async with pool.acquire() as conn:  # the id is a customer's (else the relay settles it without Temporal)
            await db.customers.save_customer(conn, closed_customer(customer["id"]), workflow_id="-", run_id="-")
        for n in range(30):
            payload = {
                "type": "applicantActionPending",  # recorded as ignored: changes nothing
                "externalUserId": customer["id"],
                "applicantId": waiting["kyc"]["applicantId"],
                "correlationId": f"one-signal-{n}",
                "createdAtMs": f"2026-01-01 00:00:{n:02d}.000",
            }
            assert await db.inbox.store_webhook(pool, dedupe_key=f"one-signal-{customer['id']}-{n}", payload=payload)
        temporal = await connect(stack.settings())
        assert await WebhookRelay(pool=pool, temporal=temporal).drain() == 30
    recorded = (
        "SELECT count(*) FROM customer_events WHERE customer_id = $1 AND actor = 'sumsub' "
        "AND details->>'sumsub_type' = 'applicantActionPending'"
    )
    deadline = time.monotonic() + 30
    while (count := await database.fetchval(recorded, customer["id"])) < 30:
        assert time.monotonic() < deadline, f"the workflow recorded {count} of 30"
        await asyncio.sleep(0.2)
    history = await temporal.get_workflow_handle(workflow_id_for(customer["id"])).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    # One for the 30; at most one other (the emulator's own applicantCreated, delivered by the stack's relay).
    assert signals.count("kyc_events") == 1 and len(signals) <= 2
    assert await database.fetchval(recorded, customer["id"]) == 30


@asynccontextmanager
async def inbox_of_its_own(stack: DevStack, database: asyncpg.Pool) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A fresh database on the stack's PostgreSQL, migrated: an inbox no other relay sweeps. (pool, its DSN)"""
    settings = stack.settings()
    assert settings.database_url is not None
    name = f"relay_drain_{uuid.uuid4().hex[:8]}"
    await database.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(settings.database_url)._replace(path=f"/{name}"))
    await db.pool.migrate(dsn)
    pool = await db.pool.create_pool(dsn, size=8)
    try:
        yield pool, dsn
    finally:
        await pool.close()
        await database.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def store_backlog(pool: asyncpg.Pool, customers: list[str], per_customer: int) -> None:
    """Webhooks for customers whose workflow has finished (their rows exist, no workflow takes a signal), stored
    `per_customer` rounds over `customers`."""
    async with pool.acquire() as conn:
        for customer in customers:
            await db.customers.save_customer(
                conn, closed_customer(customer), workflow_id=f"gone-{customer}", run_id="-"
            )
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


def closed_customer(customer_id: str) -> CustomerState:
    now = datetime.now(UTC)
    return CustomerState(
        registration=Registration(
            customer_id=customer_id, email=f"{customer_id}@example.com", customer_type=CustomerType.INDIVIDUAL
        ),
        stage=OnboardingStage.CLOSED,
        created_at=now,
        updated_at=now,
    )


BATCH = 100  # a sweep's batch in these tests (the relay's default is larger)


async def test_a_backlog_larger_than_a_batch_is_drained_at_once_in_order_per_customer(
    stack: DevStack, database: asyncpg.Pool
) -> None:
    """Two and a half sweeps' worth of stored webhooks, five per customer whose workflow has finished, are all
    settled by one drain (each delivery is Temporal's NOT_FOUND), each customer's five in the order they were
    stored."""
    async with inbox_of_its_own(stack, database) as (pool, _dsn):
        customers = [str(uuid.uuid4()) for _ in range(BATCH // 2)]
        await store_backlog(pool, customers, 5)
        relay = WebhookRelay(pool=pool, temporal=await connect(stack.settings()), sweep_batch=BATCH)
        assert await relay.drain() == 5 * len(customers)
        rows = await pool.fetch("SELECT id, external_user_id, outcome, delivered_at FROM sumsub_webhook_inbox")
        assert len(rows) == 5 * len(customers) and {(r["outcome"], r["delivered_at"] is not None) for r in rows} == {
            ("no_running_workflow", True)
        }
        for customer in customers:
            mine = sorted((r for r in rows if r["external_user_id"] == customer), key=lambda r: r["id"])
            assert [r["delivered_at"] for r in mine] == sorted(r["delivered_at"] for r in mine)


async def test_a_drain_while_temporal_is_unreachable_tries_one_batch_and_stops(
    stack: DevStack, database: asyncpg.Pool
) -> None:
    """A failed row stays pending for the next interval: the drain does not take it again and again; once
    Temporal answers, a drain settles every row."""
    async with inbox_of_its_own(stack, database) as (pool, _dsn):
        await store_backlog(pool, [str(uuid.uuid4()) for _ in range(BATCH + 50)], 1)
        cut_off = stack.settings().model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
        relay = WebhookRelay(pool=pool, temporal=await connect(cut_off, lazy=True), sweep_batch=BATCH)
        assert await relay.drain() == 0
        attempts = [r["attempts"] for r in await pool.fetch("SELECT attempts FROM sumsub_webhook_inbox ORDER BY id")]
        assert attempts == [1] * BATCH + [0] * 50
        assert await pool.fetchval("SELECT count(*) FROM sumsub_webhook_inbox WHERE delivered_at IS NULL") == BATCH + 50
        errors = await pool.fetch("SELECT DISTINCT last_error FROM sumsub_webhook_inbox WHERE attempts = 1")
        assert len(errors) == 1 and "connect" in errors[0]["last_error"]  # ops see why they are still pending

        retry_later = "SELECT bool_and(leased_until > now()) FROM sumsub_webhook_inbox WHERE attempts = 1"
        assert await pool.fetchval(retry_later)  # no drain takes a failed row before its retry time

        back = WebhookRelay(pool=pool, temporal=await connect(stack.settings()), sweep_batch=BATCH)
        deadline = time.monotonic() + 30
        while await pool.fetchval("SELECT count(*) FROM sumsub_webhook_inbox WHERE delivered_at IS NULL"):
            assert time.monotonic() < deadline, "the rows were not delivered once Temporal answered"
            await back.drain()
            await asyncio.sleep(0.5)
        rows = await pool.fetch("SELECT outcome, attempts FROM sumsub_webhook_inbox ORDER BY id")
        assert {r["outcome"] for r in rows} == {"no_running_workflow"}
        assert [r["attempts"] for r in rows] == [2] * BATCH + [1] * 50  # the failed ones once more, the rest once


async def test_webhooks_for_ids_no_customer_ever_had_are_settled_without_temporal(
    stack: DevStack, database: asyncpg.Pool
) -> None:
    """No customer row, no workflow to signal: a relay whose Temporal is unreachable settles them all the same,
    while webhooks for a known customer beside them (its id also in upper case) wait for Temporal."""
    async with inbox_of_its_own(stack, database) as (pool, _dsn):
        strangers = [str(uuid.uuid4()) for _ in range(30)]
        known = str(uuid.uuid4())
        await store_backlog(pool, [known], 1)
        for n, stranger in enumerate(strangers + ["not-a-uuid", known.upper()]):
            payload = {
                "type": "applicantPending",
                "externalUserId": stranger,
                "applicantId": f"stranger-{n}",
                "correlationId": f"stranger-{n}",
                "createdAtMs": "2030-01-01 00:00:00.000",
                "reviewStatus": "pending",
            }
            assert await db.inbox.store_webhook(pool, dedupe_key=f"stranger-{n}", payload=payload)
        cut_off = stack.settings().model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
        relay = WebhookRelay(pool=pool, temporal=await connect(cut_off, lazy=True))
        assert await relay.drain() == 31
        rows = await pool.fetch("SELECT external_user_id, outcome, last_error, attempts FROM sumsub_webhook_inbox")
        mine = {known, known.upper()}  # the same customer, however the UUID is spelled: for Temporal to answer
        settled = {(r["outcome"], r["last_error"], r["attempts"]) for r in rows if r["external_user_id"] not in mine}
        assert settled == {("no_running_workflow", "no customer with this id", 1)}
        waiting = [r for r in rows if r["external_user_id"] in mine]
        assert len(waiting) == 2 and all(r["outcome"] is None and "connect" in r["last_error"] for r in waiting)


async def test_the_apis_notice_makes_a_relay_drain_at_once(stack: DevStack, database: asyncpg.Pool) -> None:
    """A relay whose sweep comes only hourly still delivers each webhook the API stores within seconds: the API's
    notice (sent after the commit) wakes it, each time."""
    async with inbox_of_its_own(stack, database) as (pool, dsn):
        customer = str(uuid.uuid4())
        await store_backlog(pool, [customer], 1)  # stored before the relay listens: its first drain settles it
        relay = WebhookRelay(pool=pool, temporal=await connect(stack.settings()), sweep_interval=3600)
        relaying = asyncio.create_task(relay.run(dsn))
        api = stack.settings().model_copy(update={"database_url": dsn})
        try:
            await settled_within(pool, 20, "the relay's first drain did not run")
            async with running_app(create_app(api)) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
                for n in range(2):
                    body = json.dumps(
                        {
                            "type": "applicantPending",
                            "externalUserId": customer,
                            "applicantId": f"drain-{customer}",
                            "correlationId": f"notice-{customer}-{n}",
                            "createdAtMs": "2030-01-01 00:00:00.000",
                            "reviewStatus": "pending",
                        }
                    ).encode()
                    digest = webhook_digest(body, "dev-sumsub-webhook-secret")
                    response = await http.post("/webhooks/sumsub", content=body, headers={"X-Payload-Digest": digest})
                    assert response.status_code == 200
                    await settled_within(pool, 20, f"the API's notice {n + 1} did not wake the relay")
        finally:
            relay.stop()
            await asyncio.wait_for(relaying, 15)  # stop() ends it: the worker's shutdown waits for it
        rows = await pool.fetch("SELECT attempts, outcome FROM sumsub_webhook_inbox")
        assert [(r["attempts"], r["outcome"]) for r in rows] == [(1, "no_running_workflow")] * 3


async def settled_within(pool: asyncpg.Pool, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while await pool.fetchval("SELECT count(*) FROM sumsub_webhook_inbox WHERE delivered_at IS NULL"):
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.1)
