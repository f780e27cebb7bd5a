"""A webhook storm: the same 200 signed webhooks, each delivered 3 times, shuffled, concurrently.
Every customer must end in the state its newest event says, and the inbox must hold each webhook once."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import httpx

from dev.stack import DevStack
from tests.support.graphql import get_customer, register, wait_for_stage
from tests.support.webhooks import post_webhook, storm_bodies

CUSTOMERS = 40


async def test_a_storm_of_duplicated_shuffled_webhooks_ends_every_customer_right(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    run = str(int(time.time() * 1000))
    customers = await asyncio.gather(
        *(register(portal, f"storm-{run}-{i}@example.com", "INDIVIDUAL") for i in range(CUSTOMERS))
    )
    waiting = await asyncio.gather(*(wait_for_stage(portal, c["id"], "AWAITING_KYC") for c in customers))

    bodies = storm_bodies(run, waiting)
    assert len(bodies) == 200
    deliveries = bodies * 3
    random.Random(11).shuffle(deliveries)

    semaphore = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:

        async def deliver(body: bytes) -> int:
            async with semaphore:
                return await post_webhook(http, body)

        started = time.monotonic()
        statuses = await asyncio.gather(*(deliver(body) for body in deliveries))
        elapsed = time.monotonic() - started
    print(f"webhook storm: {len(deliveries)} deliveries in {elapsed:.2f}s ({len(deliveries) / elapsed:.0f}/s)")
    assert statuses == [200] * len(deliveries)

    finals = await asyncio.gather(*(wait_for_stage(portal, c["id"], "ONBOARDED", timeout=60) for c in customers))
    assert all(f["status"] == "ACTIVE" and f["kyc"]["status"] == "APPROVED" for f in finals)
    stored = await database.fetchval(
        "SELECT count(*) FROM sumsub_webhook_inbox WHERE payload->>'correlationId' LIKE $1", f"req-storm-{run}-%"
    )
    assert stored == 200
    ids = [c["id"] for c in customers]
    assert (
        await database.fetchval("SELECT count(*) FROM deposit_accounts WHERE customer_id = ANY($1::uuid[])", ids)
        == CUSTOMERS
    )
    sample = await get_customer(portal, ids[0])
    assert sample is not None and sample["depositAccount"]["status"] == "ACTIVE"
