"""More processes beside a running stack's own, sharing its services: another API (with settings of its
own) and another worker. The scale-out test and `make bench`'s two-of-each row use them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx

from dev.stack import REPO_ROOT, DevStack, free_port


@asynccontextmanager
async def extra_api(stack: DevStack, settings: Mapping[str, str]) -> AsyncIterator[str]:
    """`python -m api.main` on a free port, sharing the stack's services; yields its base URL once it is up."""
    port = free_port()
    # Its own metrics port: the stack's API holds API_METRICS_ADDRESS, and a second bind would stop this one.
    env = {**stack.child_env, "API_METRICS_ADDRESS": f"127.0.0.1:{free_port()}", **settings, "API_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.main"], env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "the extra API did not start"
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@asynccontextmanager
async def second_worker(stack: DevStack) -> AsyncIterator[int]:
    """`python -m workers.main` beside the stack's own, on the same task queues (its metrics off: the ports are
    taken); yields its pid once it has started."""
    log = stack.log_path("worker-2")
    env = {**stack.child_env, "WORKER_METRICS_ADDRESS": "", "WORKER_BUSINESS_METRICS_ADDRESS": ""}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workers.main"], env=env, cwd=REPO_ROOT, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while b"worker started" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            await asyncio.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
