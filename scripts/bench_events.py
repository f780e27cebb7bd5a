"""How long a lifecycle change takes to reach a webhook subscriber, with N customers onboarding at once.

    make bench-events                                  # a stack of its own (free ports, temp dir), N=200
    .venv/bin/python -m scripts.bench_events -n 50     # fewer customers

A receiver on loopback (verifying every request with the `standardwebhooks` library) is subscribed to
every event type; N customers are registered at once and each is taken through the emulator's WebSDK
page (submit, approve) until ACTIVE, each step pressed when the event that allows it arrives (no polling). The lag of a delivery is its arrival at the receiver minus the
event's `time` (when the workflow made the change, before its activity even wrote it): p50, p99 and
max, and deliveries per second while they arrived. Everything (stack, load, receiver) shares this
machine. Exit status 1 when an event is missing or a request failed to verify. Goal: p99 under 1 s at 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dev.stack import DevStack, free_port
from scripts.bench import percentile
from scripts.bench_api import portal_token
from scripts.own_stack import own_stack

GOAL_P99_SECONDS = 1.0
REGISTER = "mutation($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id } } }"
STAGE = "query($id: ID!) { customer(id: $id) { onboarding { stage } kyc { verificationUrl } } }"
SUBSCRIBE = """mutation($url: String!) {
  eventSubscriptionCreate(input: {url: $url, eventTypes: []}) { subscription { id } secret }
}"""


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.arrivals: dict[str, tuple[float, datetime]] = {}  # event id -> (arrival, event time)
        self.types: dict[str, str] = {}  # event id -> type
        self.duplicates = 0
        self.refused = 0
        self.seen: dict[tuple[str, str], asyncio.Event] = {}  # (customer id, event type) -> arrived

    def arrived(self, customer_id: str, event_type: str) -> asyncio.Event:
        return self.seen.setdefault((customer_id, event_type), asyncio.Event())

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        arrived = time.time()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused += 1
            return Response(status_code=401)
        if event["id"] in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[event["id"]] = (arrived, datetime.fromisoformat(event["time"]))
            self.types[event["id"]] = event["type"]
            self.arrived(event["subject"], event["type"]).set()
        return Response(status_code=204)


RETRIES: list[str] = []  # SERVICE_UNAVAILABLE answers the client retried, as the API asks


async def graphql(http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    while True:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        errors = body.get("errors") or []
        if errors and all(e.get("extensions", {}).get("code") == "SERVICE_UNAVAILABLE" for e in errors):
            RETRIES.append(errors[0]["message"])
            await asyncio.sleep(0.5)
            continue
        if errors:
            raise RuntimeError(f"GraphQL error: {errors}")
        data: dict[str, Any] = body["data"]
        return data


async def onboard(http: httpx.AsyncClient, pages: httpx.AsyncClient, receiver: Receiver, run_id: str, i: int) -> str:
    """Registers one customer and takes it through the WebSDK page until ACTIVE, each step as soon as the
    event that allows it arrives at the receiver (so the load is the onboardings, not a poller)."""
    variables = {"input": {"email": f"bench-events-{run_id}-{i}@example.com", "customerType": "INDIVIDUAL"}}
    registered = await graphql(http, REGISTER, variables)
    customer_id = str(registered["customerRegister"]["customer"]["id"])
    await receiver.arrived(customer_id, "customer.kyc_started").wait()
    url = (await graphql(http, STAGE, {"id": customer_id}))["customer"]["kyc"]["verificationUrl"]
    await pages.post(f"{url}/submit")
    await receiver.arrived(customer_id, "customer.kyc_submitted").wait()
    await pages.post(f"{url}/approve")
    await receiver.arrived(customer_id, "customer.activated").wait()
    return customer_id


async def bench(stack: DevStack, customers: int) -> int:
    receiver = Receiver()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    ops = await portal_token(stack.keycloak_url, "customers", "ops", "ops-dev-secret")
    portal = await portal_token(stack.keycloak_url, "customers", "portal", "portal-dev-secret")
    limits = httpx.Limits(max_connections=64)
    async with (
        httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {ops}"}, timeout=60) as as_ops,
        httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {portal}"}, timeout=60, limits=limits
        ) as as_portal,
        httpx.AsyncClient(timeout=60, limits=limits) as pages,
    ):
        created = (await graphql(as_ops, SUBSCRIBE, {"url": f"http://127.0.0.1:{port}/hook"}))[
            "eventSubscriptionCreate"
        ]
        receiver.secret = str(created["secret"])
        run_id = uuid.uuid4().hex[:8]
        print(f"onboarding {customers} customers at once ...", flush=True)
        started = time.perf_counter()
        ids = await asyncio.gather(*(onboard(as_portal, pages, receiver, run_id, i) for i in range(customers)))
        onboarded = time.perf_counter() - started
    pool = await asyncpg.connect(stack.child_env["DATABASE_URL"])
    try:
        expected = {
            str(row["id"])
            for row in await pool.fetch("SELECT id FROM lifecycle_events WHERE customer_id = ANY($1::uuid[])", ids)
        }
        deadline = time.monotonic() + 60
        while not expected <= receiver.arrivals.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # Where the lag goes: the change to its commit (the delivery row's created_at is its transaction's
        # start), the commit to the first send (NOTIFY, signal, workflow task, activity), the send itself.
        split = await pool.fetch(
            """
            SELECT extract(epoch FROM d.created_at - e.time) AS to_outbox,
                   extract(epoch FROM a.attempted_at - d.created_at) AS to_send,
                   a.latency_ms / 1000.0 AS send
            FROM lifecycle_events e JOIN event_deliveries d ON d.event_id = e.id
            JOIN LATERAL (SELECT * FROM event_delivery_attempts WHERE delivery_id = d.id ORDER BY id LIMIT 1) a ON true
            WHERE e.customer_id = ANY($1::uuid[])
            """,
            ids,
        )
    finally:
        await pool.close()
    server.should_exit = True
    await serving

    ours = {event_id: receiver.arrivals[event_id] for event_id in expected if event_id in receiver.arrivals}
    lags = [arrived - at.timestamp() for arrived, at in ours.values()]
    arrivals = sorted(arrived for arrived, _ in ours.values())
    span = (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    missing = len(expected) - len(ours)
    p50, p99 = percentile(lags, 0.50), percentile(lags, 0.99)
    print()
    print(
        f"event webhooks, {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{datetime.now(UTC):%Y-%m-%d}; stack, load and receiver on one machine"
    )
    print(f"  customers onboarded at once    {customers} (all ACTIVE in {onboarded:.1f} s)")
    print(f"  events delivered               {len(ours)} of {len(expected)} ({missing} missing)")
    print(f"  duplicates / refused           {receiver.duplicates} / {receiver.refused}")
    print(f"  API calls retried (503)        {len(RETRIES)} (registrations under the burst: issue 13)")
    print(
        f"  lag change -> receiver         p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
    )
    for part, what in (("to_outbox", "change -> outbox commit"), ("to_send", "commit -> first send"), ("send", "send")):
        values = [float(row[part]) for row in split]
        print(
            f"    {what:<28} p50 {percentile(values, 0.5) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms"
        )
    by_type: dict[str, list[float]] = {}
    for event_id, (arrived, at) in ours.items():
        by_type.setdefault(receiver.types[event_id], []).append(arrived - at.timestamp())
    for event_type, values in sorted(by_type.items()):
        print(
            f"    {event_type:<28} p50 {percentile(values, 0.5) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms"
        )
    print(f"  deliveries per second          {len(arrivals) / span:.0f}/s over {span:.1f} s" if span else "")
    print(f"  goal p99 < {GOAL_P99_SECONDS:g} s                 {'met' if p99 < GOAL_P99_SECONDS else 'NOT met'}")
    return 1 if missing or receiver.refused else 0


async def with_own_stack(customers: int) -> int:
    async with own_stack("bench-events-") as (stack, _root):
        return await bench(stack, customers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--customers", type=int, default=200, help="customers onboarding at once")
    args = parser.parse_args(argv)
    return asyncio.run(with_own_stack(args.customers))


if __name__ == "__main__":
    sys.exit(main())
