"""Onboarding throughput end to end: N customers registered, submitted and approved on the WebSDK page, at once.

    .venv/bin/python -m scripts.bench_onboarding -n 40 -c 10     # its own stack (free ports, temp dir)

Each customer goes registration → AWAITING_KYC → submit → KYC_IN_REVIEW → approve → ONBOARDED through the
API and the Sumsub emulator, as `tests/support/graphql.py` drives it; at most `-c` customers are in flight.
It prints onboardings/s over the whole run and the p50/p90 time from registration to ONBOARDED. Written
to measure what per-customer payload keys (issue 12) cost: every first payload of a customer makes and
wraps a key, every later one finds it cached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from dev.stack import DevStack, Ports
from kit.settings import Settings

REGISTER = """mutation Register($input: CustomerRegisterInput!) {
  customerRegister(input: $input) { customer { id } }
}"""
GET = "query Get($id: ID!) { customer(id: $id) { onboarding { stage } kyc { verificationUrl } } }"
STAGE_TIMEOUT_SECONDS = 120.0


async def _token(keycloak_url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{keycloak_url}/realms/customers/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", "client_id": "portal", "client_secret": "portal-dev-secret"},
        )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def _graphql(http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = (await http.post("/graphql", json={"query": query, "variables": variables})).json()
    if "errors" in body:
        raise RuntimeError(f"GraphQL error: {body['errors']}")
    return body["data"]


async def _until(http: httpx.AsyncClient, customer_id: str, stage: str) -> dict[str, Any]:
    deadline = time.monotonic() + STAGE_TIMEOUT_SECONDS
    while True:
        customer = (await _graphql(http, GET, {"id": customer_id}))["customer"]
        if customer is not None and customer["onboarding"]["stage"] == stage:
            return dict(customer)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{customer_id} never reached {stage}")
        await asyncio.sleep(0.1)


async def _press(page: httpx.AsyncClient, url: str) -> None:
    """A button on the WebSDK page: the emulator answers 303 back to the page."""
    response = await page.post(url)
    if response.status_code != 303:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")


async def _onboard(http: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    data = await _graphql(http, REGISTER, {"input": {"email": email, "customerType": "INDIVIDUAL"}})
    customer_id = data["customerRegister"]["customer"]["id"]
    url = (await _until(http, customer_id, "AWAITING_KYC"))["kyc"]["verificationUrl"]
    async with httpx.AsyncClient() as page:
        await _press(page, f"{url}/submit")
        await _until(http, customer_id, "KYC_IN_REVIEW")
        await _press(page, f"{url}/approve")
    await _until(http, customer_id, "ONBOARDED")
    return time.perf_counter() - started


async def bench(api_url: str, keycloak_url: str, customers: int, concurrency: int) -> None:
    headers = {"Authorization": f"Bearer {await _token(keycloak_url)}"}
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as http:

        async def one() -> float:
            async with slots:
                return await _onboard(http)

        await asyncio.gather(*(one() for _ in range(min(concurrency, customers))))  # warm-up, not measured
        started = time.perf_counter()
        durations = sorted(await asyncio.gather(*(one() for _ in range(customers))))
        elapsed = time.perf_counter() - started
    print(
        f"{customers} onboardings, {concurrency} at once: {elapsed:.1f} s, {customers / elapsed:.2f} onboardings/s; "
        f"registration to ONBOARDED p50 {durations[len(durations) // 2]:.2f} s, "
        f"p90 {durations[int(len(durations) * 0.9)]:.2f} s",
        flush=True,
    )


async def _with_own_stack(customers: int, concurrency: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-onboarding-"))
    settings_vars = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_vars} | {"LOG_FORMAT": "json"}
    stack = DevStack(data_dir=root / "data", ports=Ports.free(), env=env, log_dir=root / "logs")
    try:
        await stack.start()
        await bench(stack.api_url, stack.keycloak_url, customers, concurrency)
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--customers", type=int, default=40)
    parser.add_argument("-c", "--concurrency", type=int, default=10)
    args = parser.parse_args(argv)
    asyncio.run(_with_own_stack(args.customers, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
