"""Registration to ACTIVE through every real component: Temporal dev server, PostgreSQL, both emulators,
the worker and the API over HTTP. Nothing of ours is replaced."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import httpx
import pytest
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

from dev.stack import DevStack
from domain.customer import CUSTOMER_TYPES, CustomerType
from integrations.sumsub.client import SumsubClient
from integrations.sumsub.webhooks import webhook_digest
from tests.conftest import client_token

CUSTOMER_FIELDS = """
  id email customerType status telegramHandle
  kyc { status level applicantId verificationUrl moderationComment }
  onboarding { stage workflowId runId lastError }
  depositAccount { id status category }
"""
REGISTER = f"""
mutation Register($input: CustomerRegisterInput!) {{
  customerRegister(input: $input) {{ customer {{ {CUSTOMER_FIELDS} }} }}
}}"""
GET_CUSTOMER = f"query Get($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_FIELDS} }} }}"


async def graphql(http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


async def register(http: httpx.AsyncClient, email: str, customer_type: str, telegram: str | None = None) -> dict[str, Any]:
    body = await graphql(
        http, REGISTER, {"input": {"email": email, "customerType": customer_type, "telegramHandle": telegram}}
    )
    assert "errors" not in body, body
    return body["data"]["customerRegister"]["customer"]


async def get_customer(http: httpx.AsyncClient, customer_id: str) -> dict[str, Any] | None:
    body = await graphql(http, GET_CUSTOMER, {"id": customer_id})
    assert "errors" not in body, body
    return body["data"]["customer"]


async def wait_for_stage(http: httpx.AsyncClient, customer_id: str, stage: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        customer = await get_customer(http, customer_id)
        if customer is not None and customer["onboarding"]["stage"] == stage:
            return customer
        if time.monotonic() > deadline:
            raise AssertionError(f"customer {customer_id} never reached {stage}; last seen {customer}")
        await asyncio.sleep(0.1)


async def press(verification_url: str, action: str) -> None:
    """What a person does on the emulator's WebSDK page: press a button."""
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{verification_url}/{action}")
        assert response.status_code == 303, response.text


async def onboard(http: httpx.AsyncClient, email: str, customer_type: str) -> dict[str, Any]:
    return await finish_onboarding(http, (await register(http, email, customer_type))["id"])


async def finish_onboarding(http: httpx.AsyncClient, customer_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """What the customer and the compliance officer do on the WebSDK page: submit, then approve."""
    waiting = await wait_for_stage(http, customer_id, "AWAITING_KYC", timeout)
    await press(waiting["kyc"]["verificationUrl"], "submit")
    await wait_for_stage(http, customer_id, "KYC_IN_REVIEW", timeout)
    await press(waiting["kyc"]["verificationUrl"], "approve")
    return await wait_for_stage(http, customer_id, "ONBOARDED", timeout)


@pytest.fixture
async def keycloak_admin(stack: DevStack) -> Any:
    connection = KeycloakOpenIDConnection(
        server_url=stack.keycloak_url + "/",
        realm_name="customers",
        client_id="customer-lifecycle",
        client_secret_key="customer-lifecycle-dev-secret",
    )
    yield KeycloakAdmin(connection=connection)
    await connection.keycloak_openid.connection.aclose()
    await connection.aclose()


@pytest.fixture
async def sumsub(stack: DevStack) -> Any:
    async with SumsubClient(
        base_url=stack.sumsub_url, app_token="sbx:dev-app-token", secret_key="dev-sumsub-secret-key"
    ) as client:
        yield client


async def test_individual_goes_from_registration_to_active(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool, keycloak_admin: Any, sumsub: Any
) -> None:
    started = time.monotonic()
    registered = await register(portal, "Ada.Lovelace@Example.com", "INDIVIDUAL", telegram="@ada_lovelace")
    assert registered["status"] == "INACTIVE"
    assert registered["email"] == "ada.lovelace@example.com"
    assert registered["onboarding"]["workflowId"] == f"customer-{registered['id']}"
    assert registered["onboarding"]["stage"] in ("REGISTERED", "AWAITING_KYC")

    waiting = await wait_for_stage(portal, registered["id"], "AWAITING_KYC")
    assert waiting["kyc"]["status"] == "STARTED"
    assert waiting["kyc"]["verificationUrl"].startswith(stack.sumsub_url)
    await press(waiting["kyc"]["verificationUrl"], "submit")
    in_review = await wait_for_stage(portal, registered["id"], "KYC_IN_REVIEW")
    assert in_review["kyc"]["status"] == "PENDING"
    await press(waiting["kyc"]["verificationUrl"], "approve")
    active = await wait_for_stage(portal, registered["id"], "ONBOARDED")
    print(f"end-to-end onboarding took {time.monotonic() - started:.2f}s")

    assert active["status"] == "ACTIVE" and active["onboarding"]["runId"]
    assert active["kyc"] == {**waiting["kyc"], "status": "APPROVED", "level": "BASIC"}
    assert active["depositAccount"]["category"] == "INDIVIDUAL"
    assert active["depositAccount"]["status"] == "ACTIVE"
    assert active["telegramHandle"] == "ada_lovelace"

    # Exactly one of everything, in every system.
    assert await database.fetchval("SELECT count(*) FROM deposit_accounts WHERE customer_id = $1", registered["id"]) == 1
    row = await database.fetchrow("SELECT status, onboarding_stage FROM customers WHERE id = $1", registered["id"])
    assert dict(row) == {"status": "ACTIVE", "onboarding_stage": "ONBOARDED"}
    users = await keycloak_admin.a_get_users({"email": "ada.lovelace@example.com", "exact": True})
    assert len(users) == 1 and users[0]["attributes"]["customer_id"] == [registered["id"]]
    applicant = await sumsub.get_applicant_by_external_user_id(registered["id"])
    assert applicant is not None and applicant.id == active["kyc"]["applicantId"]
    events = [r["event_type"] for r in await database.fetch(
        "SELECT event_type FROM customer_events WHERE customer_id = $1 ORDER BY id", registered["id"])]
    assert events[0] == "customer.registered" and events[-1] == "customer.activated"


async def test_every_customer_type_is_onboarded_with_its_account_category(
    portal: httpx.AsyncClient, sumsub: Any
) -> None:
    results = await asyncio.gather(
        *(onboard(portal, f"type-{t.value.lower()}@example.com", t.value) for t in CustomerType)
    )
    for customer_type, customer in zip(CustomerType, results, strict=True):
        assert customer["status"] == "ACTIVE"
        assert customer["depositAccount"]["category"] == CUSTOMER_TYPES[customer_type].account_category.value
        applicant = await sumsub.get_applicant_by_external_user_id(customer["id"])
        expected_level = "basic-kyc-level" if customer_type is CustomerType.INDIVIDUAL else "basic-kyb-level"
        assert applicant is not None and applicant.level_name == expected_level


async def test_registering_the_same_email_again_returns_the_same_customer_and_creates_nothing(
    portal: httpx.AsyncClient, database: asyncpg.Pool, keycloak_admin: Any, sumsub: Any
) -> None:
    spellings = ["grace@example.org", "GRACE@example.org", "Grace@Example.org", " grace@example.org "]
    customers = await asyncio.gather(
        *(register(portal, spellings[i % len(spellings)], "PRIVATE_COMPANY") for i in range(20))
    )
    ids = {c["id"] for c in customers}
    assert len(ids) == 1
    (customer_id,) = ids
    await wait_for_stage(portal, customer_id, "AWAITING_KYC")
    again = await register(portal, "GRACE@EXAMPLE.ORG", "PRIVATE_COMPANY")
    assert again["id"] == customer_id and again["onboarding"]["stage"] == "AWAITING_KYC"

    assert await database.fetchval("SELECT count(*) FROM customers WHERE email_normalized = 'grace@example.org'") == 1
    assert len(await keycloak_admin.a_get_users({"email": "grace@example.org", "exact": True})) == 1
    applicant = await sumsub.get_applicant_by_external_user_id(customer_id)
    assert applicant is not None and applicant.id == again["kyc"]["applicantId"]


async def test_forged_webhooks_are_rejected_and_change_nothing(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    customer = await register(portal, "forged@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(portal, customer["id"], "AWAITING_KYC")
    payload = {
        "applicantId": waiting["kyc"]["applicantId"],
        "externalUserId": customer["id"],
        "type": "applicantReviewed",
        "reviewResult": {"reviewAnswer": "GREEN"},
        "reviewStatus": "completed",
        "correlationId": "req-forged",
        "createdAtMs": "2030-01-01 00:00:00.000",
    }
    body = json.dumps(payload).encode()
    inbox_before = await database.fetchval("SELECT count(*) FROM sumsub_webhook_inbox")
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        attempts = [
            {},  # no digest at all
            {"X-Payload-Digest": "0" * 64, "X-Payload-Digest-Alg": "HMAC_SHA256_HEX"},
            {"X-Payload-Digest": webhook_digest(body, "not-the-webhook-secret"), "X-Payload-Digest-Alg": "HMAC_SHA256_HEX"},
            {"X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret", "HMAC_SHA256_HEX"),
             "X-Payload-Digest-Alg": "HMAC_MD5_HEX"},
        ]
        for headers in attempts:
            response = await http.post("/webhooks/sumsub", content=body, headers={"Content-Type": "application/json", **headers})
            assert response.status_code == 401, (headers, response.text)
        tampered = body.replace(b"GREEN", b"GREEM")
        good_digest = webhook_digest(body, "dev-sumsub-webhook-secret")
        response = await http.post("/webhooks/sumsub", content=tampered, headers={"X-Payload-Digest": good_digest})
        assert response.status_code == 401
    await asyncio.sleep(0.5)
    assert await database.fetchval("SELECT count(*) FROM sumsub_webhook_inbox") == inbox_before
    after = await get_customer(portal, customer["id"])
    assert after is not None and after["onboarding"]["stage"] == "AWAITING_KYC" and after["status"] == "INACTIVE"


async def test_the_api_refuses_callers_without_a_valid_token(stack: DevStack) -> None:
    query = {"query": "{ __typename }"}
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.post("/graphql", json=query)).status_code == 401
        assert (await http.post("/graphql", json=query, headers={"Authorization": "Bearer not.a.jwt"})).status_code == 401
        # A real token of a client without the portal or ops role is authenticated but forbidden.
        worker_token = await client_token(stack, "customer-lifecycle", "customer-lifecycle-dev-secret")
        response = await http.post(
            "/graphql",
            json={"query": GET_CUSTOMER, "variables": {"id": "00000000-0000-0000-0000-000000000000"}},
            headers={"Authorization": f"Bearer {worker_token}"},
        )
    # The worker's token is not meant for this API (no audience), so it is refused outright.
    assert response.status_code == 401


async def test_invalid_registration_input_is_a_precise_graphql_error(portal: httpx.AsyncClient, database: asyncpg.Pool) -> None:
    before = await database.fetchval("SELECT count(*) FROM customers")
    body = await graphql(portal, REGISTER, {"input": {"email": "not-an-email", "customerType": "INDIVIDUAL"}})
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "email"}
    body = await graphql(portal, REGISTER, {"input": {"email": "x@example.com", "customerType": "PIRATE"}})
    assert "errors" in body and body.get("data") is None
    body = await graphql(portal, GET_CUSTOMER, {"id": "not-a-uuid"})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await get_customer(portal, "00000000-0000-8000-8000-000000000000") is None
    assert await database.fetchval("SELECT count(*) FROM customers") == before


async def test_health_and_readiness(stack: DevStack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "temporal": "ok"}
