"""The lifecycle events the rest of the bank is told of, pulled from `GET /events` (the outbox).

Through the real stack: a customer onboarded, suspended, reactivated and closed yields exactly the
expected CloudEvents, in per-customer sequence order with no gap, each once across pages, with ids and
statuses only; the feed refuses tokens without the `events` role and bad cursors.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

import db.events
import db.pool
from dev.stack import DevStack
from domain.events import PUBLISHED_TYPES
from tests.support.emulators import client_token
from tests.support.event_schemas import validator
from tests.support.graphql import finish_onboarding, graphql, register

SUSPEND = 'mutation($id: ID!) { customerSuspend(input: {customerId: $id, reason: "check"}) { customer { id } } }'
REACTIVATE = "mutation($id: ID!) { customerReactivate(input: {customerId: $id}) { customer { id } } }"
CLOSE = 'mutation($id: ID!) { customerClose(input: {customerId: $id, reason: "request"}) { customer { id } } }'
NOW = datetime(2026, 12, 1, tzinfo=UTC)
LIFE = [
    "customer.registered",
    "customer.kyc_started",
    "customer.kyc_submitted",
    "customer.kyc_approved",
    "customer.activated",
    "customer.suspended",
    "customer.reactivated",
    "customer.closed",
]


async def read_all(http: httpx.AsyncClient, *, limit: int, **params: str) -> list[dict[str, Any]]:
    """Every event the feed holds now, page by page from the start."""
    events: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = await http.get("/events", params={"limit": str(limit), **params, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        if not body["events"]:
            return events
        events += body["events"]
        after = body["next"]


async def test_a_customers_life_is_published_in_sequence_once_and_without_personal_data(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    email = f"events.{uuid.uuid4().hex[:8]}@example.com"
    customer = await finish_onboarding(portal, (await register(portal, email, "PRIVATE_COMPANY"))["id"])
    for mutation in (SUSPEND, REACTIVATE, CLOSE):
        assert "errors" not in await graphql(ops, mutation, {"id": customer["id"]})

    token = await client_token(stack, "events-reader", "events-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}) as http:
        # Small pages: the cursor must carry a reader across every boundary without a loss or a repeat.
        everything = await read_all(http, limit=3)
        ours = [event for event in everything if event["subject"] == customer["id"]]
        assert [event["type"] for event in ours] == LIFE
        assert [event["sequence"] for event in ours] == list(range(1, len(LIFE) + 1))
        assert len({event["id"] for event in everything}) == len(everything), "an event was read twice"
        for event in ours:
            validator(event["type"]).validate(event)  # api/event_schemas/, the documented contract
            assert event["specversion"] == "1.0" and event["source"] == "urn:customer-lifecycle" and event["time"]
            assert event["data"]["customerId"] == customer["id"] and event["data"]["customerType"] == "PRIVATE_COMPANY"
        activated = ours[LIFE.index("customer.activated")]["data"]
        assert activated["status"] == "ACTIVE" and activated["depositAccount"]["category"] == "BUSINESS"
        assert activated["depositAccount"]["id"] == customer["depositAccount"]["id"]
        assert ours[-1]["data"]["depositAccount"]["status"] == "CLOSED"
        assert email not in json.dumps(ours) and email.split("@")[0] not in json.dumps(ours)

        # The feed is the outbox: one row per published change, written with the change.
        assert await database.fetchval(
            "SELECT count(*) FROM lifecycle_events WHERE customer_id = $1", customer["id"]
        ) == len(LIFE)
        only = await read_all(http, limit=50, types="customer.activated,customer.closed")
        assert {e["type"] for e in only} <= {"customer.activated", "customer.closed"}
        assert [e["type"] for e in only if e["subject"] == customer["id"]] == ["customer.activated", "customer.closed"]

        assert (await http.get("/events", params={"after": "not-a-cursor"})).status_code == 400
        assert (await http.get("/events", params={"types": "customer.nope"})).status_code == 400
        assert (await http.get("/events", params={"limit": "0"})).status_code == 400
    assert set(LIFE) <= set(PUBLISHED_TYPES.values())


async def test_the_feed_needs_a_token_with_the_events_role(stack: DevStack, portal: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.get("/events")).status_code == 401
        forbidden = await http.get("/events", headers={"Authorization": portal.headers["Authorization"]})
        assert forbidden.status_code == 403 and "events role" in forbidden.text


async def test_a_transaction_that_commits_late_is_read_not_skipped(stack: DevStack) -> None:
    """The xmin fence: A takes its transaction id first and commits last; a reader past B must still get A."""
    customer_a, customer_b = str(uuid.uuid4()), str(uuid.uuid4())
    database = await db.pool.create_pool(stack.child_env["DATABASE_URL"], size=3)  # with the service's jsonb codec
    try:
        await _late_commit(database, customer_a, customer_b)
    finally:
        await database.execute(
            "DELETE FROM lifecycle_events WHERE customer_id = ANY($1::uuid[])", [customer_a, customer_b]
        )
        await database.close()


async def _late_commit(database: asyncpg.Pool, customer_a: str, customer_b: str) -> None:
    async with database.acquire() as a_conn, database.acquire() as b_conn:
        a = a_conn.transaction()
        await a.start()
        try:
            await db.events.append(
                a_conn,
                customer_id=customer_a,
                type="customer.registered",
                time=NOW,
                data={},
                idempotency_key=f"A-{customer_a}",
            )
            async with b_conn.transaction():
                await db.events.append(
                    b_conn,
                    customer_id=customer_b,
                    type="customer.registered",
                    time=NOW,
                    data={},
                    idempotency_key=f"B-{customer_b}",
                )
            # B is committed, A is not: B waits behind A, so a reader cannot move past A's place.
            seen = [e.customer_id for e in await db.events.feed(database, after=None, types=None, limit=10_000)]
            assert customer_a not in seen and customer_b not in seen
        finally:
            await a.commit()
    read = [e.customer_id for e in await db.events.feed(database, after=None, types=None, limit=10_000)]
    assert read.index(customer_a) < read.index(customer_b)  # both, in transaction order


async def test_a_cursor_out_of_range_is_400(stack: DevStack) -> None:
    token = await client_token(stack, "events-reader", "events-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}) as http:
        for cursor in ("1:-1", "-1:1", f"1:{2**63}", f"{10**20}:1"):
            encoded = base64.urlsafe_b64encode(cursor.encode()).decode()
            assert (await http.get("/events", params={"after": encoded})).status_code == 400, cursor
