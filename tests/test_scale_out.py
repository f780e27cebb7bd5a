"""Past one machine: two API processes and two workers against one Temporal and one PostgreSQL.

Customers are registered and read through both APIs and a duplicated, shuffled storm of their Sumsub
webhooks is sent through both while the first worker is down (the second carries on), then both run. Every customer ends ACTIVE and APPROVED, exactly
once: one Keycloak user, one KYC case, one deposit account, one activation, each webhook stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from dev.extra import extra_api, second_worker
from dev.stack import DevStack
from domain.customer import workflow_id_for
from tests.support.emulators import keycloak_users
from tests.support.graphql import register, wait_for_stage
from tests.support.webhooks import STORM_SCRIPT, post_webhook, storm_bodies

CUSTOMERS = 12


async def identities(temporal: Client, customer_id: str) -> set[str]:
    """Which worker processes completed the customer's workflow tasks and ran its activities."""
    history = await temporal.get_workflow_handle(workflow_id_for(customer_id)).fetch_history()
    found = set()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            found.add(event.workflow_task_completed_event_attributes.identity)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            found.add(event.activity_task_started_event_attributes.identity)
    return found


async def test_two_apis_and_two_workers_onboard_and_storm_every_customer_right_exactly_once(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    stack_of_two = contextlib.AsyncExitStack()
    try:
        await _onboard_and_storm(stack, portal, database, stack_of_two)
    finally:
        await stack_of_two.aclose()


async def _onboard_and_storm(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool, stack_of_two: contextlib.AsyncExitStack
) -> None:
    run = str(int(time.time() * 1000))
    token = {"Authorization": portal.headers["Authorization"]}
    async with (
        extra_api(stack, {}) as second_api,
        httpx.AsyncClient(base_url=stack.api_url, headers=token, timeout=30) as one,
        httpx.AsyncClient(base_url=second_api, headers=token, timeout=30) as two,
    ):
        apis = [one, two]
        customers = await asyncio.gather(
            *(register(apis[i % 2], f"scale-{run}-{i}@example.com", "INDIVIDUAL") for i in range(CUSTOMERS))
        )
        waiting = await asyncio.gather(
            *(wait_for_stage(apis[(i + 1) % 2], c["id"], "AWAITING_KYC") for i, c in enumerate(customers))
        )
        # Which of two idle workers polls first is the server's choice (one may take every task): the stack's worker
        # opened the KYC cases; now a second one starts and the first is down while the storm arrives, then both run.
        await stack_of_two.enter_async_context(second_worker(stack))
        stack.kill("worker")
        try:
            deliveries = [(apis[i % 2], body) for i, body in enumerate(storm_bodies(run, waiting) * 2)]
            random.Random(5).shuffle(deliveries)
            limit = asyncio.Semaphore(16)

            async def deliver(http: httpx.AsyncClient, body: bytes) -> int:
                async with limit:
                    return await post_webhook(http, body)

            statuses = await asyncio.gather(*(deliver(http, body) for http, body in deliveries))
            assert statuses == [200] * len(deliveries)
        finally:
            stack.restart("worker")
        finals = await asyncio.gather(
            *(wait_for_stage(apis[i % 2], c["id"], "ONBOARDED", timeout=90) for i, c in enumerate(customers))
        )

    assert all(f["status"] == "ACTIVE" and f["kyc"]["status"] == "APPROVED" for f in finals)
    ids = [c["id"] for c in customers]
    counts = await database.fetchrow(
        """
        SELECT (SELECT count(*) FROM deposit_accounts WHERE customer_id = ANY($1::uuid[])) AS accounts,
               (SELECT count(*) FROM customer_events WHERE customer_id = ANY($1::uuid[])
                  AND event_type = 'kyc.started') AS kyc_cases,
               (SELECT count(*) FROM customer_events WHERE customer_id = ANY($1::uuid[])
                  AND event_type = 'customer.activated') AS activations,
               (SELECT count(*) FROM sumsub_webhook_inbox WHERE payload->>'correlationId' LIKE $2) AS webhooks
        """,
        ids,
        f"req-storm-{run}-%",
    )
    assert dict(counts) == {
        "accounts": CUSTOMERS,
        "kyc_cases": CUSTOMERS,
        "activations": CUSTOMERS,
        "webhooks": CUSTOMERS * len(STORM_SCRIPT),
    }
    for customer_id in ids:
        assert len(await keycloak_users(stack, customer_id)) == 1
    temporal = await Client.connect(stack.temporal_address)
    workers = set().union(*[await identities(temporal, customer_id) for customer_id in ids])
    assert len(workers) >= 2, f"only {workers} did the work"
