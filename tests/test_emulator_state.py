"""The emulators remember: with a state dir, a new emulator process on the same folder carries on where
the last one stopped (Sumsub: applicants, WebSDK links, the delivery log and webhooks still to deliver;
Keycloak: users with everything on them, the signing key, the sent e-mails).

Each emulator is served in-process over real HTTP, twice on the same folder; the dev stack's own
kill-and-restart of the emulator processes is in `test_dev_stack_supervision.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dev.emulators import keycloak, sumsub
from dev.emulators.keycloak_state import SIGNING_KEY, USERS_DIR
from dev.emulators.state import Store
from integrations.sumsub.client import SumsubClient
from tests.helpers import free_port, running_app
from tests.support.emulators import DEV_OFFICERS

pytestmark = pytest.mark.stack  # serves emulators and a webhook receiver on loopback

APP_TOKEN = "sbx:state-test-token"
SECRET_KEY = "state-test-secret"
WEBHOOK_SECRET = "state-test-webhook-secret"
LEVEL = "basic-kyc-level"


class Receiver:
    """Our side of the webhooks: answers `status` (500 until told otherwise) and keeps every body."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []

    async def endpoint(self, request: Request) -> Response:
        self.bodies.append(json.loads(await request.body()))
        return Response(status_code=self.status)


@asynccontextmanager
async def sumsub_emulator(state_dir: Path, receiver: Receiver, port: int) -> AsyncIterator[SumsubClient]:
    receiver_app = Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
    async with running_app(receiver_app) as receiver_url:
        app = sumsub.create_app(
            app_token=APP_TOKEN,
            secret_key=SECRET_KEY,
            webhook_url=f"{receiver_url}/hook",
            webhook_secret=WEBHOOK_SECRET,
            public_url=f"http://127.0.0.1:{port}",
            retry_delays=(0.2, 0.2, 0.2, 0.2),
            state_dir=state_dir,
        )
        async with (
            running_app(app, port) as url,
            SumsubClient(base_url=url, app_token=APP_TOKEN, secret_key=SECRET_KEY) as client,
        ):
            yield client


async def eventually(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return result


async def test_sumsub_emulator_remembers_applicants_links_and_pending_webhooks(tmp_path: Path) -> None:
    port = free_port()
    refusing = Receiver(status=500)
    async with sumsub_emulator(tmp_path, refusing, port) as client:
        applicant, _ = await client.create_applicant(
            external_user_id="kept-1", level_name=LEVEL, applicant_type="individual", email="kept@example.com"
        )
        link = await client.create_websdk_link(external_user_id="kept-1", level_name=LEVEL, ttl_seconds=600)
        async with httpx.AsyncClient() as browser:
            assert (await browser.post(f"{link}/submit")).status_code == 303
        # Both webhooks (created, pending) failed once and wait for their resend when the emulator stops.
        await eventually(lambda: {b["type"] for b in refusing.bodies} == {"applicantCreated", "applicantPending"})
        await eventually(lambda: len(Store(tmp_path).read_lines(sumsub.DELIVERY_LOG)) >= 2)

    accepting = Receiver(status=200)
    async with sumsub_emulator(tmp_path, accepting, port) as client:
        again = await client.get_applicant(applicant.id)
        assert again.model_dump(exclude={"review"}) == applicant.model_dump(exclude={"review"})
        assert again.review.review_status == "pending" and again.review.attempt_cnt == 1
        assert (await client.get_applicant_by_external_user_id("kept-1")) == again
        async with httpx.AsyncClient() as browser:
            page = await browser.get(link)
            assert page.status_code == 200 and applicant.id in page.text
        # The stored deliveries are resent to the new receiver: the same bodies, nothing else.
        delivered = await eventually(lambda: len(accepting.bodies) >= 2 and accepting.bodies)
        created = [b for b in refusing.bodies if b["type"] == "applicantCreated"][0]
        assert created in delivered and {b["type"] for b in delivered} == {"applicantCreated", "applicantPending"}
        async with httpx.AsyncClient() as http:
            log = (await http.get(f"http://127.0.0.1:{port}/_emulator/deliveries")).json()
        by_delivery: dict[str, list[str]] = {}
        for entry in log:
            by_delivery.setdefault(entry["deliveryId"], []).append(entry["outcome"])
        assert len(by_delivery) == 2
        assert all(outcomes[0] == "retrying" and outcomes[-1] == "delivered" for outcomes in by_delivery.values())
    assert Store(tmp_path).read_all(sumsub.PENDING_DIR) == {}


@asynccontextmanager
async def keycloak_emulator(state_dir: Path | None, port: int) -> AsyncIterator[httpx.AsyncClient]:
    app = keycloak.create_app(
        realm_export=keycloak.DEFAULT_REALM_FILE, public_url=f"http://127.0.0.1:{port}", state_dir=state_dir
    )
    async with running_app(app, port) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


async def _token(http: httpx.AsyncClient, **form: str) -> str:
    response = await http.post("/realms/customers/protocol/openid-connect/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _admin_token(http: httpx.AsyncClient) -> str:
    return await _token(
        http,
        grant_type="client_credentials",
        client_id="customer-lifecycle",
        client_secret="customer-lifecycle-dev-secret",
    )


async def _customer_token(http: httpx.AsyncClient, password: str) -> httpx.Response:
    return await http.post(
        "/realms/customers/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "customer-dev-cli", "username": "jane", "password": password},
    )


async def _service_accounts(http: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, str]:
    users = await http.get("/admin/realms/customers/users", headers=admin, params={"username": "service-account-"})
    return {user["username"]: user["id"] for user in users.json()}


async def test_keycloak_emulator_remembers_users_passwords_roles_its_key_and_sent_emails(tmp_path: Path) -> None:
    port = free_port()
    async with keycloak_emulator(tmp_path, port) as http:
        admin_token = await _admin_token(http)
        admin = {"Authorization": f"Bearer {admin_token}"}
        created = await http.post(
            "/admin/realms/customers/users",
            headers=admin,
            json={
                "username": "jane",
                "email": "jane@example.com",
                "enabled": True,
                "attributes": {"customer_id": ["c-42"]},
            },
        )
        assert created.status_code == 201, created.text
        user_url = created.headers["location"].removeprefix(f"http://127.0.0.1:{port}")
        role = (await http.get("/admin/realms/customers/roles/customer", headers=admin)).json()
        mapped = await http.post(f"{user_url}/role-mappings/realm", headers=admin, json=[role])
        assert mapped.status_code == 204
        password = {"type": "password", "value": "jane-secret", "temporary": False}
        assert (await http.put(f"{user_url}/reset-password", headers=admin, json=password)).status_code == 204
        emailed = await http.put(f"{user_url}/execute-actions-email", headers=admin, json=["VERIFY_EMAIL"])
        assert emailed.status_code == 204
        before = (await http.get(user_url, headers=admin)).json()
        keys = (await http.get("/realms/customers/protocol/openid-connect/certs")).json()
        emails = (await http.get("/_emulator/sent-emails")).json()
        assert (await _customer_token(http, "jane-secret")).status_code == 200
        service_accounts = await _service_accounts(http, admin)
    stored = Store(tmp_path).read_all(USERS_DIR)
    assert len(stored) == len(service_accounts) + len(DEV_OFFICERS) + 1  # and the customer
    assert stored[before["id"]]["password_hash"] and "jane-secret" not in json.dumps(stored)  # a hash, not it

    async with keycloak_emulator(tmp_path, port) as http:
        admin = {"Authorization": f"Bearer {admin_token}"}  # signed by the previous process
        assert (await http.get(user_url, headers=admin)).json() == before
        roles = (await http.get(f"{user_url}/role-mappings/realm", headers=admin)).json()
        assert [r["name"] for r in roles] == ["customer"]
        assert (await http.get("/realms/customers/protocol/openid-connect/certs")).json() == keys
        assert (await http.get("/_emulator/sent-emails")).json() == emails
        assert (await _customer_token(http, "jane-secret")).status_code == 200
        assert (await _customer_token(http, "not-her-password")).status_code == 401
        assert await _service_accounts(http, admin) == service_accounts  # the same ids, so the same `sub`
        assert (await http.delete(user_url, headers=admin)).status_code == 204

    async with keycloak_emulator(tmp_path, port) as http:
        admin = {"Authorization": f"Bearer {await _admin_token(http)}"}
        assert (await http.get(user_url, headers=admin)).status_code == 404
    assert Store(tmp_path).read(SIGNING_KEY) is not None


async def test_keycloak_emulator_without_a_state_dir_makes_a_new_key_each_time(tmp_path: Path) -> None:
    port = free_port()
    async with keycloak_emulator(None, port) as http:
        first = (await http.get("/realms/customers/protocol/openid-connect/certs")).json()
    async with keycloak_emulator(None, port) as http:
        second = (await http.get("/realms/customers/protocol/openid-connect/certs")).json()
    assert first != second


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_a_new_line(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text('{"n":1}\n{"n":')
    store = Store(tmp_path)
    assert store.read_lines("log.jsonl") == [{"n": 1}]
    store.append("log.jsonl", {"n": 3})
    assert store.read_lines("log.jsonl") == [{"n": 1}, {"n": 3}]
    store.write("doc.json", {"a": 1})
    assert store.read("doc.json") == {"a": 1} and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
