"""`make dev`'s stack: comes up, prints its URLs and credentials, and Ctrl-C leaves nothing running.

It runs in a network namespace of its own (we are root here, as in CI), so its fixed dev ports
(7233, 8000, 8080, 8090, ...) cannot collide with a `make dev` running beside the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import astuple
from pathlib import Path

import httpx
import pytest

from dev.stack import REPO_ROOT, DevStack, Ports
from tests.helpers import clean_env
from tests.support.emulators import client_token, keycloak_users
from tests.support.graphql import finish_onboarding, register, wait_for_stage

# Brings the namespace's loopback up (a new network namespace starts with it down), then becomes the stack.
pytestmark = pytest.mark.stack  # whole stacks of their own

_LAUNCH = """
import fcntl, os, socket, struct, sys
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
os.execv(sys.executable, [sys.executable, "-m", "dev.stack"])
"""


def _processes_mentioning(marker: str) -> list[str]:
    """Processes whose command line or environment names `marker` (our data folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {command[:120]}")
    return found


def test_no_two_ports_a_process_hands_out_are_the_same() -> None:
    """Each pick is released at once, and the kernel offers released ports again: 300 stacks' worth of picks
    held a repeat in every run before the picker remembered what it had handed out."""
    picked = [port for _ in range(300) for port in astuple(Ports.free())]
    assert len(set(picked)) == len(picked)


def test_dev_stack_starts_prints_its_urls_and_ctrl_c_stops_every_process() -> None:
    data_dir = tempfile.mkdtemp(prefix="customer-lifecycle-make-dev-")
    env = clean_env() | {"DATA_DIR": data_dir}
    proc = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", _LAUNCH],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    started = time.monotonic()
    try:
        for raw in proc.stdout:
            output.append(raw.decode(errors="replace"))
            if "Token: curl" in output[-1] or time.monotonic() - started > 120:
                break
        up_after = time.monotonic() - started
        banner = "".join(output)
        assert "dev stack is up" in banner, banner[-3000:]
        for expected in (
            "http://127.0.0.1:8000/graphql",
            "http://127.0.0.1:8233",
            "127.0.0.1:7233",
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8090",
            "portal-dev-secret",
            "ops-dev-secret",
        ):
            assert expected in banner, expected
        assert len(_processes_mentioning(data_dir)) >= 6  # temporal, postgres, 2 emulators, worker, api
        interrupted = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the foreground group
        after_ctrl_c = proc.communicate(timeout=60)[0].decode(errors="replace")
        stopped_after = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"dev stack up in {up_after:.1f}s, stopped {stopped_after:.1f}s after Ctrl-C")
    # One line says it all; what the children say while they shut down (Temporal's "Failed to poll for
    # task" warnings, uvicorn's goodbyes) is not echoed.
    lines = [line for line in after_ctrl_c.splitlines() if line.strip()]
    assert len([line for line in lines if "stopped" in line]) == 1, after_ctrl_c
    assert lines[-1].startswith("dev stack stopped: api, worker, "), after_ctrl_c
    assert "level=WARN" not in after_ctrl_c and "Failed to poll" not in after_ctrl_c, after_ctrl_c
    assert "Shutting down" not in after_ctrl_c, after_ctrl_c
    deadline = time.monotonic() + 10
    while _processes_mentioning(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(data_dir) == []
    assert proc.returncode == 0
    shutil.rmtree(data_dir, ignore_errors=True)


async def test_customers_workflows_and_emulator_state_survive_a_restart_of_the_whole_stack() -> None:
    """Temporal's SQLite file, PostgreSQL and the emulators' state live under DATA_DIR: stop everything,
    start again, go on: the same token, the same Keycloak user, the same Sumsub applicant and WebSDK link."""
    data_dir = Path(tempfile.mkdtemp(prefix="customer-lifecycle-restart-"))
    ports = Ports.free()

    def new_stack() -> DevStack:
        return DevStack(
            data_dir=data_dir / "data", ports=ports, env=clean_env() | {"LOG_FORMAT": "json"}, log_dir=data_dir / "logs"
        )

    first = new_stack()
    try:
        await first.start()
        token = await client_token(first, "portal", "portal-dev-secret")
        async with portal_client(first, token) as portal:
            customer = await register(portal, "survivor@example.com", "INDIVIDUAL")
            waiting = await wait_for_stage(portal, customer["id"], "AWAITING_KYC")
        users_before = await keycloak_users(first, customer["id"])
    finally:
        first.stop()

    second = new_stack()
    try:
        await second.start()
        # A new API process fetches the JWKS afresh: the token from before verifies only if the key was kept.
        async with portal_client(second, token) as portal:
            # The customer presses the buttons of the link they were given before the restart.
            done = await finish_onboarding(portal, customer["id"])
        users_after = await keycloak_users(second, customer["id"])
    finally:
        second.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert done["status"] == "ACTIVE" and done["onboarding"]["workflowId"] == waiting["onboarding"]["workflowId"]
    assert done["kyc"]["applicantId"] == waiting["kyc"]["applicantId"]
    assert len(users_before) == 1 and [u["id"] for u in users_after] == [users_before[0]["id"]]


def portal_client(stack: DevStack, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
