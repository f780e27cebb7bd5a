"""Registration to ACTIVE through every real component: Temporal dev server, PostgreSQL, both emulators,
the worker and the API over HTTP. Nothing of ours is replaced."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import httpx

from dev.stack import DevStack
from domain.customer import CUSTOMER_TYPES, CustomerType
from integrations.sumsub.webhooks import webhook_digest
from kit.settings import Settings
from kit.temporal import connect
from tests.support.customers import assert_no_workflow, customer_id_of
from tests.support.emulators import client_token
from tests.support.graphql import (
    GET_CUSTOMER,
    REGISTER,
    get_customer,
    graphql,
    onboard,
    press,
    register,
    wait_for_stage,
)


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
    assert (
        await database.fetchval("SELECT count(*) FROM deposit_accounts WHERE customer_id = $1", registered["id"]) == 1
    )
    row = await database.fetchrow("SELECT status, onboarding_stage FROM customers WHERE id = $1", registered["id"])
    assert dict(row) == {"status": "ACTIVE", "onboarding_stage": "ONBOARDED"}
    users = await keycloak_admin.a_get_users({"email": "ada.lovelace@example.com", "exact": True})
    assert len(users) == 1 and users[0]["attributes"]["customer_id"] == [registered["id"]]
    applicant = await sumsub.get_applicant_by_external_user_id(registered["id"])
    assert applicant is not None and applicant.id == active["kyc"]["applicantId"]
    events = [
        r["event_type"]
        for r in await database.fetch(
            "SELECT event_type FROM customer_events WHERE customer_id = $1 ORDER BY id", registered["id"]
        )
    ]
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

    assert await database.fetchval("SELECT count(*) FROM customers WHERE email = 'grace@example.org'") == 1
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
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        attempts = [
            {},  # no digest at all
            {"X-Payload-Digest": "0" * 64, "X-Payload-Digest-Alg": "HMAC_SHA256_HEX"},
            {
                "X-Payload-Digest": webhook_digest(body, "not-the-webhook-secret"),
                "X-Payload-Digest-Alg": "HMAC_SHA256_HEX",
            },
            {
                "X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret", "HMAC_SHA256_HEX"),
                "X-Payload-Digest-Alg": "HMAC_MD5_HEX",
            },
        ]
        for headers in attempts:
            response = await http.post(
                "/webhooks/sumsub", content=body, headers={"Content-Type": "application/json", **headers}
            )
            assert response.status_code == 401, (headers, response.text)
        tampered = body.replace(b"GREEN", b"GREEM")
        good_digest = webhook_digest(body, "dev-sumsub-webhook-secret")
        response = await http.post("/webhooks/sumsub", content=tampered, headers={"X-Payload-Digest": good_digest})
        assert response.status_code == 401
        # An authentic webhook behind the forged ones, of a kind the workflow records as ignored: once its
        # audit row is there, the workflow has handled everything delivered before it.
        after_them = json.dumps(
            {
                "applicantId": waiting["kyc"]["applicantId"],
                "externalUserId": customer["id"],
                "type": "applicantActionPending",
                "correlationId": "req-after-forged",
                "createdAtMs": "2030-01-01 00:00:01.000",
            }
        ).encode()
        response = await http.post(
            "/webhooks/sumsub",
            content=after_them,
            headers={"X-Payload-Digest": webhook_digest(after_them, "dev-sumsub-webhook-secret")},
        )
        assert response.status_code == 200, response.text
    ignored = (
        "SELECT count(*) FROM customer_events WHERE customer_id = $1 AND event_type = 'kyc.event_ignored' "
        "AND details->>'sumsub_type' = 'applicantActionPending'"
    )
    deadline = time.monotonic() + 15
    while not await database.fetchval(ignored, customer["id"]):
        assert time.monotonic() < deadline, "the authentic webhook after the forged ones never reached the workflow"
        await asyncio.sleep(0.1)

    # A webhook is stored before it is answered: none of the forged ones was, only the authentic one.
    stored = "SELECT count(*) FROM sumsub_webhook_inbox WHERE external_user_id = $1 AND payload->>'correlationId' = $2"
    assert await database.fetchval(stored, customer["id"], "req-forged") == 0
    assert await database.fetchval(stored, customer["id"], "req-after-forged") == 1
    after = await get_customer(portal, customer["id"])
    assert after is not None and after["onboarding"]["stage"] == "AWAITING_KYC" and after["status"] == "INACTIVE"
    assert after["kyc"]["status"] == "STARTED"


async def test_the_api_refuses_callers_without_a_valid_token(stack: DevStack) -> None:
    query = {"query": "{ __typename }"}
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.post("/graphql", json=query)).status_code == 401
        assert (
            await http.post("/graphql", json=query, headers={"Authorization": "Bearer not.a.jwt"})
        ).status_code == 401
        # A real token of a client without the portal or ops role is authenticated but forbidden.
        worker_token = await client_token(stack, "customer-lifecycle", "customer-lifecycle-dev-secret")
        response = await http.post(
            "/graphql",
            json={"query": GET_CUSTOMER, "variables": {"id": "00000000-0000-0000-0000-000000000000"}},
            headers={"Authorization": f"Bearer {worker_token}"},
        )
    # The worker's token is not meant for this API (no audience), so it is refused outright.
    assert response.status_code == 401


async def test_invalid_registration_input_is_a_precise_graphql_error(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    before = await database.fetchval("SELECT count(*) FROM customers")
    body = await graphql(portal, REGISTER, {"input": {"email": "not-an-email", "customerType": "INDIVIDUAL"}})
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "email"}
    body = await graphql(portal, REGISTER, {"input": {"email": "refused@example.com", "customerType": "PIRATE"}})
    assert "errors" in body and body.get("data") is None
    body = await graphql(
        portal,
        REGISTER,
        {
            "input": {
                "email": "refused@example.com",
                "customerType": "INDIVIDUAL",
                "telegramHandle": "no spaces allowed",
            }
        },
    )
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "telegramHandle"}
    body = await graphql(portal, GET_CUSTOMER, {"id": "not-a-uuid"})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await get_customer(portal, "00000000-0000-8000-8000-000000000000") is None

    # Nothing was stored for the refused registrations: no customer row, no workflow under the id the
    # email would have had (the same derivation gives a registered customer its id).
    assert await database.fetchval("SELECT count(*) FROM customers") == before
    temporal = await connect(Settings(temporal_address=stack.temporal_address))
    for email in ("not-an-email", "refused@example.com"):
        assert (
            await database.fetchval("SELECT count(*) FROM customers WHERE id = $1", customer_id_of(stack, email)) == 0
        )
        await assert_no_workflow(temporal, customer_id_of(stack, email))
    accepted = await register(portal, "accepted@example.com", "INDIVIDUAL")
    assert accepted["id"] == customer_id_of(stack, "accepted@example.com")


async def test_health_and_readiness(stack: DevStack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "temporal": "ok"}
