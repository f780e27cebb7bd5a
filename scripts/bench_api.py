"""A small, bounded load test of the API on loopback: Sumsub webhook intake and the `customer(id)` read.

    make bench-api                                            # starts its own stack (free ports, temp dir)
    .venv/bin/python scripts/bench_api.py --start-stack       # the same
    .venv/bin/python scripts/bench_api.py                     # against a running `make dev`

It registers a few customers, then sends N signed webhooks (unique correlationIds; half for those
customers, half for unknown customer ids — both are accepted intake), then N `customer(id)` queries
with a portal token, each at a fixed concurrency, and prints requests/s and p50/p99 latency.
Latency is measured by the client, which shares the machine (and its CPU) with the stack; its own CPU
cost per request is printed too. Each worker has its own one-connection httpx client: one pool of 32
connections costs httpx several times more CPU per request, and the client would be what is measured.
Exit status 1 when a request got a wrong answer (an HTTP error status, a GraphQL error) or when none got
through; timeouts are results and only reported.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import math
import os
import platform
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from integrations.sumsub.webhooks import DEFAULT_WEBHOOK_DIGEST_ALG, webhook_digest
from scripts.own_stack import own_stack

DEFAULT_REQUESTS = 2000
DEFAULT_CONCURRENCY = 32
DEFAULT_CUSTOMERS = 20
DEFAULT_WARMUP = 50
DEFAULT_MAX_SECONDS = 120.0  # per scenario; the run stops taking new requests after this
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_SETTLE_SECONDS = 20.0  # let the worker drain the webhook backlog before reads are measured
DEV_WEBHOOK_SECRET = "dev-sumsub-webhook-secret"

REGISTER = """mutation Register($input: CustomerRegisterInput!) {
  customerRegister(input: $input) { customer { id } }
}"""
GET_CUSTOMER = """query Get($id: ID!) {
  customer(id: $id) { id status kyc { status level } onboarding { stage workflowId } depositAccount { id } }
}"""


@dataclass
class Result:
    """What one scenario measured; `outcomes` counts "ok" and every kind of failure."""

    name: str
    planned: int
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    outcomes: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds this process spent sending

    @property
    def completed(self) -> int:
        return sum(self.outcomes.values())

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the successful requests' latency, in milliseconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


Send = Callable[[httpx.AsyncClient, int], Awaitable[str]]


async def run_load(
    name: str, *, requests: int, concurrency: int, args: argparse.Namespace, base_url: str, send: Send
) -> Result:
    """Sends `requests` requests from `concurrency` workers, each on its own connection.

    `send(http, i)` returns "ok" or what went wrong; no new request starts after `args.max_seconds`.
    """
    result = Result(name, requests, concurrency)
    indexes = itertools.count()
    clients = [
        httpx.AsyncClient(base_url=base_url, timeout=args.request_timeout, limits=httpx.Limits(max_connections=1))
        for _ in range(concurrency)
    ]

    async def worker(http: httpx.AsyncClient) -> None:
        while (i := next(indexes)) < requests and time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                outcome = await send(http, i)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            result.outcomes[outcome] += 1
            if outcome == "ok":
                result.latencies.append(time.perf_counter() - sent)

    started, cpu_before = time.perf_counter(), time.process_time()
    deadline = started + args.max_seconds
    try:
        await asyncio.gather(*(worker(http) for http in clients))
    finally:
        result.elapsed = time.perf_counter() - started
        result.client_cpu = time.process_time() - cpu_before
        await asyncio.gather(*(http.aclose() for http in clients))
    return result


# --- the two scenarios ------------------------------------------------------------------------------


def webhook_sender(*, run_id: str, customers: list[str], secret: str) -> Send:
    async def send(http: httpx.AsyncClient, i: int) -> str:
        customer_id = customers[(i // 2) % len(customers)] if customers and i % 2 == 0 else str(uuid.uuid4())
        body = json.dumps(
            {
                "applicantId": f"bench{run_id}{i:07d}",
                "inspectionId": f"bench{run_id}{i:07d}",
                "applicantType": "individual",
                "correlationId": f"bench-{run_id}-{i}",
                "levelName": "basic-kyc-level",
                "sandboxMode": True,
                "externalUserId": customer_id,
                "type": "applicantCreated",  # accepted and delivered, but changes no customer's state
                "reviewStatus": "init",
                "createdAtMs": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                "clientId": "bench",
            }
        ).encode()
        response = await http.post(
            "/webhooks/sumsub",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Payload-Digest": webhook_digest(body, secret),
                "X-Payload-Digest-Alg": DEFAULT_WEBHOOK_DIGEST_ALG,
            },
        )
        return "ok" if response.status_code == 200 else f"HTTP {response.status_code}"

    return send


def query_sender(*, token: str, customers: list[str]) -> Send:
    headers = {"Authorization": f"Bearer {token}"}

    async def send(http: httpx.AsyncClient, i: int) -> str:
        variables = {"id": customers[i % len(customers)]}
        response = await http.post("/graphql", json={"query": GET_CUSTOMER, "variables": variables}, headers=headers)
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        body = response.json()
        if body.get("errors"):
            return "GraphQL error"
        return "ok" if body["data"]["customer"] else "not found"

    return send


async def portal_token(keycloak_url: str, realm: str, client_id: str, secret: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{keycloak_url.rstrip('/')}/realms/{realm}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


async def register_customers(http: httpx.AsyncClient, *, token: str, run_id: str, count: int) -> list[str]:
    limit = asyncio.Semaphore(8)

    async def register(i: int) -> str:
        variables = {"input": {"email": f"bench-{run_id}-{i}@example.com", "customerType": "INDIVIDUAL"}}
        async with limit:
            response = await http.post(
                "/graphql",
                json={"query": REGISTER, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"registration failed: {body['errors']}")
        return str(body["data"]["customerRegister"]["customer"]["id"])

    return list(await asyncio.gather(*(register(i) for i in range(count))))


# --- running it -------------------------------------------------------------------------------------


def _require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to load-test {url}: only loopback addresses are allowed")


def _table(results: list[Result]) -> str:
    header = (
        "scenario",
        "requests",
        "conc",
        "ok",
        "failed",
        "seconds",
        "req/s",
        "p50 ms",
        "p99 ms",
        "client cpu ms/req",
    )
    rows = [header]
    for r in results:
        ok = r.outcomes.get("ok", 0)
        rows.append(
            (
                r.name,
                f"{r.completed}/{r.planned}",
                str(r.concurrency),
                str(ok),
                str(r.completed - ok),
                f"{r.elapsed:.1f}",
                f"{r.completed / r.elapsed:.0f}" if r.elapsed else "-",
                f"{r.percentile_ms(0.50):.1f}",
                f"{r.percentile_ms(0.99):.1f}",
                f"{1000 * r.client_cpu / r.completed:.2f}" if r.completed else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    for r in results:
        failures = {k: v for k, v in r.outcomes.items() if k != "ok"}
        if failures:
            lines.append(f"  {r.name} failures: {dict(failures)}")
    return "\n".join(lines)


async def bench(args: argparse.Namespace, api_url: str, keycloak_url: str) -> list[Result]:
    run_id = uuid.uuid4().hex[:8]
    token = await portal_token(keycloak_url, args.realm, args.client_id, args.client_secret)
    print(f"registering {args.customers} customers...", flush=True)
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        customers = await register_customers(http, token=token, run_id=run_id, count=args.customers)

    results: list[Result] = []
    for name, make_sender in (
        (
            "sumsub webhook intake",
            lambda: webhook_sender(run_id=run_id, customers=customers, secret=args.webhook_secret),
        ),
        ("graphql customer(id)", lambda: query_sender(token=token, customers=customers)),  # noqa: B023  (called within this iteration)
    ):
        if results:
            await asyncio.sleep(args.settle_seconds)
        token = await portal_token(keycloak_url, args.realm, args.client_id, args.client_secret)  # fresh per scenario
        send = make_sender()
        if args.warmup:
            warmup = await run_load(
                name,
                requests=args.warmup,
                concurrency=min(args.concurrency, args.warmup),
                args=args,
                base_url=api_url,
                send=lambda http, i: send(http, args.requests + i),  # noqa: B023  (called within this iteration); indexes (correlationIds) of their own
            )
            if warmup.outcomes.get("ok", 0) != warmup.completed:
                print(f"warning: warm-up of {name!r} had failures: {dict(warmup.outcomes)}", file=sys.stderr)
        print(f"running {name}: {args.requests} requests at concurrency {args.concurrency}...", flush=True)
        results.append(
            await run_load(
                name, requests=args.requests, concurrency=args.concurrency, args=args, base_url=api_url, send=send
            )
        )
    await asyncio.sleep(args.settle_seconds)
    await graphql_bombs(api_url, token)
    return results


# The query that took 41 s and a core before the GraphQL limits: 500 aliases of a page with audit trails.
BOMB = (
    "{ "
    + " ".join(f"a{i}: customers(first: 100) {{ edges {{ node {{ id events {{ type }} }} }} }}" for i in range(500))
    + " }"
)


async def graphql_bombs(api_url: str, token: str, *, bombs: int = 10, rounds: int = 5) -> None:
    """Ten bombs at once, five times, while `/healthz` is asked in a loop: how long a refusal takes, and
    whether the API stays responsive meanwhile."""
    refused: list[float] = []
    health: list[float] = []
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:

        async def bomb() -> None:
            started = time.perf_counter()
            response = await http.post("/graphql", json={"query": BOMB})
            refused.append(time.perf_counter() - started)
            assert response.json().get("data") is None, "a bomb was not refused"

        async def probe(stop: asyncio.Event) -> None:
            while not stop.is_set():
                started = time.perf_counter()
                assert (await http.get("/healthz")).status_code == 200
                health.append(time.perf_counter() - started)

        for _ in range(rounds):
            stop = asyncio.Event()
            prober = asyncio.create_task(probe(stop))
            await asyncio.gather(*(bomb() for _ in range(bombs)))
            stop.set()
            await prober
    refused.sort()
    health.sort()
    print(
        f"graphql bombs: {len(refused)} refused ({len(BOMB)} bytes each, {bombs} at once), "
        f"p50 {refused[len(refused) // 2] * 1000:.1f} ms, max {refused[-1] * 1000:.1f} ms; "
        f"/healthz meanwhile: {len(health)} answered, max {health[-1] * 1000:.1f} ms",
        flush=True,
    )


async def _with_own_stack(args: argparse.Namespace) -> list[Result]:
    async with own_stack("bench-api-") as (stack, _root):
        return await bench(args, stack.api_url, stack.keycloak_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--start-stack", action="store_true", help="start a stack of its own on free ports in a temp dir"
    )
    parser.add_argument("--api-url", default="http://127.0.0.1:8000", help="the API of a running stack (loopback only)")
    parser.add_argument("--keycloak-url", default="http://127.0.0.1:8080", help="where portal tokens come from")
    parser.add_argument("--realm", default="customers")
    parser.add_argument("--client-id", default="portal")
    parser.add_argument("--client-secret", default="portal-dev-secret")
    parser.add_argument("--webhook-secret", default=DEV_WEBHOOK_SECRET, help="SUMSUB_WEBHOOK_SECRET of the API")
    parser.add_argument("-n", "--requests", type=int, default=DEFAULT_REQUESTS, help="requests per scenario")
    parser.add_argument("-c", "--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS, help="customers registered first")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="unmeasured requests before each scenario")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="time bound per scenario")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT)
    parser.add_argument("--settle-seconds", type=float, default=DEFAULT_SETTLE_SECONDS, help="pause between scenarios")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.customers < 1:
        parser.error("--requests, --concurrency and --customers must be at least 1")

    if args.start_stack:
        results = asyncio.run(_with_own_stack(args))
    else:
        _require_loopback(args.api_url)
        _require_loopback(args.keycloak_url)
        results = asyncio.run(bench(args, args.api_url, args.keycloak_url))
    print()
    print(
        f"customer-lifecycle API, {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{args.customers} customers; client and stack on one machine"
    )
    print(_table(results))
    # Timeouts are results (they are in the table); a wrong answer or nothing answered at all is a failure.
    wrong = [k for r in results for k in r.outcomes if k.startswith("HTTP ") or k in ("GraphQL error", "not found")]
    return 1 if wrong or any(not r.outcomes.get("ok") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
