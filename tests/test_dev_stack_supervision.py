"""The dev stack heals: a child that dies after start-up is started again (and remembers what it held),
a child that keeps dying stops the stack with a message naming it, every port is configurable, and the
codec admits both origins of the Temporal dev server's UI.

The children are killed with a plain SIGKILL from outside (`os.kill`), so the supervisor learns of
it the way it would of a crash; `DevStack.kill` is for tests that do the restarting themselves.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from dev.stack import REPO_ROOT, DevStack, Ports
from integrations.sumsub.client import SumsubClient
from kit.settings import Settings
from tests.helpers import clean_env
from tests.support.emulators import client_token
from tests.support.graphql import finish_onboarding, register, wait_for_stage

pytestmark = pytest.mark.stack  # stacks of their own


async def eventually_up(url: str, timeout: float = 30.0) -> float:
    """Seconds until `url` answers 200 (bounded)."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            assert time.monotonic() - started < timeout, f"{url} did not come back"
            await asyncio.sleep(0.05)


async def crash(stack: DevStack, name: str, ready_url: str) -> tuple[float, float]:
    """SIGKILLs the child `name` behind the supervisor's back; returns the seconds until it runs again
    (a new pid) and until `ready_url` answers 200 once more."""
    old = stack.pid(name)
    assert old is not None, f"{name} is not running"
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    while stack.pid(name) in (None, old):
        assert time.monotonic() - killed < 30, f"{name} was not restarted: {stack.events}"
        await asyncio.sleep(0.02)
    respawned = time.monotonic() - killed
    await eventually_up(ready_url)
    return respawned, time.monotonic() - killed


@pytest_asyncio.fixture(scope="module")
async def supervised() -> AsyncIterator[DevStack]:
    """A stack of its own, supervised as `make dev`'s is."""
    root = Path(tempfile.mkdtemp(prefix="customer-lifecycle-supervised-"))
    stack = DevStack(
        data_dir=root / "data",
        ports=Ports.free(),
        env=clean_env() | {"LOG_FORMAT": "json"},
        log_dir=root / "logs",
        supervise=True,
    )
    try:
        await stack.start()
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_every_child_that_dies_is_restarted_with_its_state_and_customers_still_onboard(
    supervised: DevStack,
) -> None:
    stack = supervised
    portal_token = await client_token(stack, "portal", "portal-dev-secret")
    admin_token = await client_token(stack, "customer-lifecycle", "customer-lifecycle-dev-secret")
    unused_ops_token = await client_token(stack, "ops", "ops-dev-secret")  # first shown to the API after the kill
    admin = {"Authorization": f"Bearer {admin_token}"}
    realm = f"{stack.keycloak_url}/admin/realms/customers"
    async with (
        httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {portal_token}"}) as portal,
        httpx.AsyncClient() as http,
        SumsubClient(
            base_url=stack.sumsub_url, app_token="sbx:dev-app-token", secret_key="dev-sumsub-secret-key"
        ) as sumsub,
    ):
        before = await register(portal, "registered-before-the-crashes@example.com", "INDIVIDUAL")
        await wait_for_stage(portal, before["id"], "AWAITING_KYC")
        created = await http.post(f"{realm}/users", headers=admin, json={"username": "kept-user", "enabled": True})
        assert created.status_code == 201, created.text
        applicant, _ = await sumsub.create_applicant(
            external_user_id="kept-applicant", level_name="basic-kyc-level", applicant_type="individual"
        )

        timings = {"worker": await crash(stack, "worker", stack.worker_metrics_url)}
        discovery = f"{stack.keycloak_url}/realms/customers/.well-known/openid-configuration"
        timings["keycloak-emulator"] = await crash(stack, "keycloak-emulator", discovery)
        # The user is still there, and the emulator still honours a token it signed before it died.
        users = await http.get(f"{realm}/users", headers=admin, params={"username": "kept-user", "exact": "true"})
        assert users.status_code == 200 and [u["username"] for u in users.json()] == ["kept-user"], users.text
        ops_read = await http.post(
            f"{stack.api_url}/graphql",
            headers={"Authorization": f"Bearer {unused_ops_token}"},
            json={"query": "{ customers(first: 1) { edges { node { id } } } }"},
        )
        assert ops_read.status_code == 200 and "errors" not in ops_read.json(), ops_read.text

        timings["sumsub-emulator"] = await crash(stack, "sumsub-emulator", f"{stack.sumsub_url}/_emulator/deliveries")
        assert (await sumsub.get_applicant(applicant.id)).external_user_id == "kept-applicant"

        timings["temporal"] = await crash(stack, "temporal", f"{stack.api_url}/readyz")
        timings["postgres"] = await crash(stack, "postgres", f"{stack.api_url}/readyz")

        after = await register(portal, "registered-after-the-crashes@example.com", "INDIVIDUAL")
        done = await asyncio.gather(
            finish_onboarding(portal, before["id"], timeout=60), finish_onboarding(portal, after["id"], timeout=60)
        )
    for name, (respawned, ready) in timings.items():
        print(f"{name}: running again {respawned:.2f} s after SIGKILL, answering after {ready:.2f} s")
    assert [c["status"] for c in done] == ["ACTIVE", "ACTIVE"]
    assert stack.failure is None
    assert len(stack.events) == len(timings), stack.events  # one line per exit, nothing else
    for name, line in zip(timings, stack.events, strict=True):
        assert line.startswith(f"{name} exited (signal SIGKILL)") and "restarting it in 0.5 s" in line, line


async def test_a_child_killed_through_the_stack_stays_down_until_restarted(supervised: DevStack) -> None:
    """`DevStack.kill` is the crash tests' own: the supervisor does not race them to the restart."""
    seen = len(supervised.events)
    old = supervised.pid("sumsub-emulator")
    supervised.kill("sumsub-emulator")
    # The supervisor looks every 0.1 s and would restart after 0.5 s: give it a second to (not) do so,
    # bounded by a positive signal that it is alive and looking at the other children.
    worker = supervised.pid("worker")
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while supervised.pid("worker") in (None, worker):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert supervised.pid("sumsub-emulator") is None
    assert [line.split(" ")[0] for line in supervised.events[seen:]] == ["worker"]
    supervised.restart("sumsub-emulator")
    assert supervised.pid("sumsub-emulator") not in (None, old)
    await eventually_up(f"{supervised.sumsub_url}/_emulator/deliveries")


def _occupy(port: int) -> socket.socket:
    """Listens on 127.0.0.1:`port`, as another program that took a port would."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            assert time.monotonic() < deadline, f"port {port} stayed taken"
            time.sleep(0.01)
    sock.listen()
    return sock


def _pids_of(marker: str) -> dict[int, str]:
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            found[int(pid)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def test_make_dev_on_configured_ports_stops_with_a_message_when_a_child_keeps_failing() -> None:
    """`python -m dev.stack` with every port moved by its setting; then the Sumsub emulator dies and its
    port is taken, so each restart fails: the fifth exit within a minute stops the whole stack."""
    data_dir = tempfile.mkdtemp(prefix="customer-lifecycle-failing-")
    ports = Ports.free()
    env = clean_env() | {
        "DATA_DIR": data_dir,
        "DEV_TEMPORAL_PORT": str(ports.temporal),
        "TEMPORAL_UI_PORT": str(ports.temporal_ui),
        "API_PORT": str(ports.api),
        "DEV_KEYCLOAK_PORT": str(ports.keycloak),
        "DEV_SUMSUB_PORT": str(ports.sumsub),
        "WORKER_METRICS_ADDRESS": f"127.0.0.1:{ports.worker_metrics}",
        "WORKER_BUSINESS_METRICS_ADDRESS": f"127.0.0.1:{ports.worker_business_metrics}",
        "API_METRICS_ADDRESS": f"127.0.0.1:{ports.api_metrics}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dev.stack"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    taken: socket.socket | None = None
    try:
        banner = []
        for raw in proc.stdout:
            banner.append(raw.decode(errors="replace"))
            if "Token: curl" in banner[-1]:
                break
        text = "".join(banner)
        assert "dev stack is up" in text, text[-3000:]
        for expected in (
            f"http://127.0.0.1:{ports.api}/graphql",
            f"127.0.0.1:{ports.temporal}",
            f"http://localhost:{ports.temporal_ui}",
            f"http://127.0.0.1:{ports.keycloak}",
            f"http://127.0.0.1:{ports.sumsub}",
            f"http://127.0.0.1:{ports.worker_metrics}/metrics",
            f"http://127.0.0.1:{ports.worker_business_metrics}/metrics",
            f"http://127.0.0.1:{ports.api_metrics}/metrics",
        ):
            assert expected in text, expected
        (sumsub_pid,) = [pid for pid, cmd in _pids_of(data_dir).items() if "dev.emulators.sumsub" in cmd]
        os.kill(sumsub_pid, signal.SIGKILL)
        taken = _occupy(ports.sumsub)
        _, errors = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if taken is not None:
            taken.close()
    stderr = errors.decode(errors="replace")
    exits = [line for line in stderr.splitlines() if line.startswith("dev stack: sumsub-emulator exited")]
    assert len(exits) == 5, stderr[-3000:]
    assert "signal SIGKILL" in exits[0] and "restarting it in 0.5 s" in exits[0]
    assert "(exit code " in exits[1] and "restarting it in 1 s" in exits[1]
    assert "restarting it in 2 s" in exits[2] and "restarting it in 4 s" in exits[3]
    final = stderr.strip().splitlines()[-1]
    assert final.startswith("dev stack failed: sumsub-emulator exited 5 times within 60 s"), stderr[-3000:]
    assert f"{data_dir}/logs/sumsub-emulator.log" in final and "during start-up" not in stderr
    assert "address already in use" in Path(f"{data_dir}/logs/sumsub-emulator.log").read_text().lower()
    assert proc.returncode == 1
    deadline = time.monotonic() + 10
    while _pids_of(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pids_of(data_dir) == {}
    shutil.rmtree(data_dir, ignore_errors=True)


def test_the_ports_of_make_dev_come_from_the_settings() -> None:
    settings = Settings(
        dev_temporal_port=1001,
        temporal_ui_port=1002,
        api_port=1003,
        dev_keycloak_port=1004,
        dev_sumsub_port=1005,
        worker_metrics_address="127.0.0.1:1006",
        worker_business_metrics_address="0.0.0.0:1007",
        api_metrics_address="127.0.0.1:1008",
    )
    assert Ports.configured(settings) == Ports(1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008)
    assert Ports.configured(Settings()) == Ports()  # the defaults agree


CORS_PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}


async def test_the_codec_admits_both_origins_of_the_dev_servers_ui_and_no_other(stack: DevStack) -> None:
    ui = stack.ports.temporal_ui
    assert stack.temporal_ui_origins == [f"http://127.0.0.1:{ui}", f"http://localhost:{ui}"]
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        for origin in stack.temporal_ui_origins:
            allowed = await http.options("/codec/decode", headers={"Origin": origin} | CORS_PREFLIGHT)
            assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == origin
            # What the browser then sends: the answer carries the grant for that same origin.
            decoded = await http.post("/codec/decode", json={"payloads": []}, headers={"Origin": origin})
            assert decoded.headers["access-control-allow-origin"] == origin
        for stranger in (f"http://127.0.0.2:{ui}", f"http://localhost:{ui + 1}", "http://evil.example"):
            refused = await http.options("/codec/decode", headers={"Origin": stranger} | CORS_PREFLIGHT)
            assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        # The UI the Temporal banner advertises (localhost) is the one that points at our codec.
        settings = (await http.get(f"http://localhost:{ui}/api/v1/settings")).json()
    assert settings["Codec"]["Endpoint"] == f"{stack.api_url}/codec"
