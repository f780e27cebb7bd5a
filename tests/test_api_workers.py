"""`API_WORKERS`: `python -m api.main` forks that many API processes onto one port and keeps them running.

Each serves the API on the shared port and its metrics on a port of its own; one that is SIGKILLed is
started again while the others keep answering; one that cannot start stops them all (exit status 1).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from dev.stack import REPO_ROOT, DevStack
from tests.helpers import free_port
from tests.support.emulators import client_token
from tests.support.graphql import get_customer, register


def adjacent_free_ports() -> int:
    """A port that is free, and so is the next one (API process i serves its metrics on port + i)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def start_api(stack: DevStack, *, port: int, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {
        **stack.child_env,
        "API_PORT": str(port),
        "API_WORKERS": "2",
        "API_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "api.main"], env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def answering(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False


async def wait_until_serving(proc: subprocess.Popen[bytes], urls: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while not all([await answering(http, url) for url in urls]):
            assert time.monotonic() < deadline and proc.poll() is None, "the API processes did not all come up"
            await asyncio.sleep(0.1)


async def test_two_api_processes_serve_one_port_and_a_killed_one_is_started_again(stack: DevStack) -> None:
    port, metrics_port = free_port(), adjacent_free_ports()
    base = f"http://127.0.0.1:{port}"
    every_process = [f"{base}/healthz", *(f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(2))]
    proc = start_api(stack, port=port, metrics_port=metrics_port)
    try:
        await wait_until_serving(proc, every_process)
        first = children(proc.pid)
        assert len(first) == 2, first
        seen = set(first)

        token = await client_token(stack, "portal", "portal-dev-secret")
        async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as portal:
            customer = await register(portal, f"two-processes-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
            reads = await asyncio.gather(*(get_customer(portal, customer["id"]) for _ in range(20)))
            assert all(read is not None and read["id"] == customer["id"] for read in reads)

            killed = min(first)
            os.kill(killed, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not ((now := children(proc.pid)) and len(now) == 2 and killed not in now):
                assert time.monotonic() < deadline and proc.poll() is None, f"no new API process: {now}"
                await asyncio.sleep(0.1)
            seen |= now
            await wait_until_serving(proc, every_process)
            assert await get_customer(portal, customer["id"]) is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not children_alive(seen)


def children_alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (the supervisor reaped its children before it exited)."""
    return {pid for pid in pids if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


async def test_an_api_process_that_cannot_start_stops_them_all(stack: DevStack) -> None:
    metrics_port = adjacent_free_ports()
    with socket.socket() as taken:  # process 1's metrics port is someone else's
        taken.bind(("127.0.0.1", metrics_port + 1))
        taken.listen()
        proc = start_api(stack, port=free_port(), metrics_port=metrics_port)
        try:
            assert proc.wait(timeout=60) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
