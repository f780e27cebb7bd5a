"""Customers for the benchmarks, made as the portal and a person would: registered through the API (at most
16 at a time, retrying what the API asks to retry), and onboarded by pressing the WebSDK page's buttons."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import asyncpg
import httpx

from scripts.bench_api import REGISTER


async def register_many(api_urls: Sequence[str], token: str, *, run_id: str, label: str, count: int) -> list[str]:
    """Registers `count` customers, 16 at a time, spread over the API processes `api_urls`; their ids."""
    limit = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as clients:
        apis = [
            await clients.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30, headers=headers))
            for url in api_urls
        ]

        async def one(i: int) -> str:
            http = apis[i % len(apis)]
            variables = {"input": {"email": f"{label}-{run_id}-{i}@example.com", "customerType": "INDIVIDUAL"}}
            for attempt in range(10):
                async with limit:
                    response = await http.post("/graphql", json={"query": REGISTER, "variables": variables})
                if response.headers.get("content-type", "").split(";")[0] != "application/json":
                    raise RuntimeError(f"registration answered {response.status_code}: {response.text[:300]!r}")
                body = response.json()
                codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
                if codes != ["SERVICE_UNAVAILABLE"]:
                    break
                await asyncio.sleep(0.5 * 2**attempt)  # as the API asks: retry (the worker is busy)
            if body.get("errors"):
                raise RuntimeError(f"registration failed: {body['errors']}")
            return str(body["data"]["customerRegister"]["customer"]["id"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def wait_for_stage(pool: asyncpg.Pool, ids: list[str], stage: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while await pool.fetchval(
        "SELECT count(*) FROM customers WHERE id = any($1::uuid[]) AND onboarding_stage = $2", ids, stage
    ) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"customers did not all reach {stage} within {timeout:.0f} s")
        await asyncio.sleep(0.2)


# --- onboarding throughput ------------------------------------------------------------------------------


async def onboard_all(
    api_urls: Sequence[str], token: str, pool: asyncpg.Pool, *, run_id: str, count: int, label: str = "onboard"
) -> float:
    """Seconds from the first registration until all `count` customers are ACTIVE; the WebSDK's buttons are
    pressed as soon as each customer can take them."""
    started = time.perf_counter()
    ids = await register_many(api_urls, token, run_id=run_id, label=label, count=count)
    pressed: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        deadline = time.monotonic() + 600
        while True:
            rows = await pool.fetch(
                "SELECT id::text, onboarding_stage, state->>'verification_url' AS url FROM customers "
                "WHERE id = any($1::uuid[])",
                ids,
            )
            if len(rows) == count and all(r["onboarding_stage"] == "ONBOARDED" for r in rows):
                return time.perf_counter() - started
            presses = []
            for row in rows:
                action = {"AWAITING_KYC": "submit", "KYC_IN_REVIEW": "approve"}.get(row["onboarding_stage"])
                if action and pressed.get(row["id"]) != action:
                    pressed[row["id"]] = action
                    presses.append(http.post(f"{row['url']}/{action}"))
            for response in await asyncio.gather(*presses):
                if response.status_code != 303:
                    raise RuntimeError(f"the WebSDK page refused a press: {response.status_code} {response.text}")
            if time.monotonic() > deadline:
                raise RuntimeError("onboarding did not finish within 600 s")
            await asyncio.sleep(0.1)
