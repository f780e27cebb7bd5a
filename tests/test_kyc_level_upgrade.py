"""The KYC level upgrade on the real stack: a customer asks for it with its own token and is approved at the
advanced level on the emulator's WebSDK page; ops ask for another, which Sumsub rejects; and every refusal
(not onboarded, Sumsub refusing while a review is pending, the portal, another customer, an unknown id) is a
precise GraphQL error that changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
from keycloak import KeycloakAdmin

import db.events
from api.events_feed import cloud_event
from dev.stack import DevStack
from integrations.sumsub.client import SumsubClient
from tests.support.emulators import password_token
from tests.support.event_schemas import validator
from tests.support.graphql import finish_onboarding, graphql, press, register, wait_for_stage

PASSWORD = "an upgrading customer's password"
UPGRADE = """mutation Upgrade($id: ID!) {
  customerKycLevelUpgrade(input: {customerId: $id}) { customer { status kyc { level upgrade { status } } } }
}"""
KYC = """query Kyc($id: ID!) { customer(id: $id) { status
  kyc { status level upgrade {
    level levelName status requestedBy verificationUrl moderationComment rejectLabels startedAt endedAt nextReminderAt
  } }
} }"""
EVENTS = "query Events($id: ID!) { customer(id: $id) { events { type actor details } } }"
KYC_LINK = "mutation Link($id: ID!) { customerKycLinkCreate(input: {customerId: $id}) { url } }"


def code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


async def kyc_of(ops: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    body = await graphql(ops, KYC, {"id": customer_id})
    assert "errors" not in body, body
    return dict(body["data"]["customer"])


async def kyc_when(
    ops: httpx.AsyncClient, customer_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not check(customer := await kyc_of(ops, customer_id)):
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached; last seen {customer}")
        await asyncio.sleep(0.1)
    return customer


def upgrade_status(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda c: c["kyc"]["upgrade"] is not None and c["kyc"]["upgrade"]["status"] == status


async def own_client(stack: DevStack, admin: KeycloakAdmin, email: str) -> httpx.AsyncClient:
    """The API as the customer calls it, signed in with a password set through Keycloak's admin API."""
    [user] = await admin.a_get_users({"email": email, "exact": True})
    await admin.a_set_user_password(user["id"], PASSWORD, temporary=False)
    token = await password_token(stack.keycloak_url, email, PASSWORD)
    return httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest_asyncio.fixture
async def onboarded(portal: httpx.AsyncClient) -> AsyncIterator[Callable[[str], Any]]:
    async def make(label: str) -> tuple[str, str]:
        email = f"upgrade-{label}-{uuid.uuid4().hex[:8]}@example.com"
        customer = await register(portal, email, "INDIVIDUAL")
        await finish_onboarding(portal, customer["id"])
        return customer["id"], email

    yield make


async def test_a_customer_upgrades_itself_and_is_advanced_once_sumsub_approves_the_new_level(
    stack: DevStack,
    ops: httpx.AsyncClient,
    database: asyncpg.Pool,
    keycloak_admin: KeycloakAdmin,
    onboarded: Callable[[str], Any],
) -> None:
    customer_id, email = await onboarded("self")
    async with await own_client(stack, keycloak_admin, email) as own:
        started = await graphql(own, UPGRADE, {"id": customer_id})
    assert "errors" not in started, started
    assert started["data"]["customerKycLevelUpgrade"]["customer"] == {
        "status": "ACTIVE",
        "kyc": {"level": "BASIC", "upgrade": {"status": "STARTED"}},
    }
    customer = await kyc_of(ops, customer_id)
    upgrade = customer["kyc"]["upgrade"]
    assert (upgrade["level"], upgrade["levelName"], upgrade["endedAt"]) == ("ADVANCED", "advanced-kyc-level", None)
    assert upgrade["nextReminderAt"] is not None and upgrade["requestedBy"] != "ops"
    # The upgrade's link, and any fresh one meanwhile, open the advanced level's page.
    fresh = (await graphql(ops, KYC_LINK, {"id": customer_id}))["data"]["customerKycLinkCreate"]["url"]
    async with httpx.AsyncClient() as http:
        for url in (upgrade["verificationUrl"], fresh):
            page = await http.get(url)
            assert page.status_code == 200 and "advanced-kyc-level" in page.text

    await press(upgrade["verificationUrl"], "submit")
    pending = await kyc_when(ops, customer_id, upgrade_status("PENDING"))
    assert (pending["status"], pending["kyc"]["level"]) == ("ACTIVE", "BASIC")
    await press(upgrade["verificationUrl"], "approve")
    advanced = await kyc_when(ops, customer_id, upgrade_status("APPROVED"))
    assert (advanced["status"], advanced["kyc"]["status"], advanced["kyc"]["level"]) == (
        "ACTIVE",
        "APPROVED",
        "ADVANCED",
    )
    assert advanced["kyc"]["upgrade"]["endedAt"] is not None

    # Published with its audit row: the new level, in the documented schema.
    [event] = await database.fetch(
        "SELECT id, type, sequence, time, data::text FROM lifecycle_events"
        " WHERE customer_id = $1 AND type = 'customer.kyc_level_upgraded'",
        customer_id,
    )
    data = json.loads(event["data"])
    assert (data["kycLevel"], data["status"]) == ("ADVANCED", "ACTIVE")
    envelope = cloud_event(
        db.events.LifecycleEvent(
            str(event["id"]), customer_id, event["sequence"], event["type"], event["time"], data, (0, 0)
        ),
        "urn:test",
    )
    validator("customer.kyc_level_upgraded").validate(envelope)
    types = [e["type"] for e in (await graphql(ops, EVENTS, {"id": customer_id}))["data"]["customer"]["events"]]
    assert [t for t in reversed(types) if t.startswith("kyc.upgrade")] == [
        "kyc.upgrade_started",
        "kyc.upgrade_reset",  # Sumsub's applicantLevelChanged
        "kyc.upgrade_submitted",
        "kyc.upgrade_approved",
    ]


async def test_sumsub_rejecting_the_upgrade_leaves_the_customer_active_at_basic_and_says_why(
    ops: httpx.AsyncClient, sumsub: SumsubClient, onboarded: Callable[[str], Any]
) -> None:
    customer_id, _ = await onboarded("rejected")
    started = await graphql(ops, UPGRADE, {"id": customer_id})
    assert "errors" not in started, started
    url = (await kyc_of(ops, customer_id))["kyc"]["upgrade"]["verificationUrl"]
    await press(url, "submit")
    await kyc_when(ops, customer_id, upgrade_status("PENDING"))
    await press(url, "reject")
    declined = await kyc_when(ops, customer_id, upgrade_status("DECLINED"))
    assert (declined["status"], declined["kyc"]["status"], declined["kyc"]["level"]) == ("ACTIVE", "APPROVED", "BASIC")
    upgrade = declined["kyc"]["upgrade"]
    assert (upgrade["moderationComment"], upgrade["rejectLabels"]) == (
        "We could not verify your identity.",
        ["FORGERY"],
    )
    events = (await graphql(ops, EVENTS, {"id": customer_id}))["data"]["customer"]["events"]
    [row] = [e for e in events if e["type"] == "kyc.upgrade_declined"]
    assert row["actor"] == "sumsub"
    assert (row["details"]["moderation_comment"], row["details"]["reject_labels"]) == (
        "We could not verify your identity.",
        ["FORGERY"],
    )
    assert not any(e["type"] == "customer.suspended" for e in events)

    # Asked again: the applicant's review at the level starts afresh at Sumsub, so the old RED (which a status
    # poll would read) cannot decide the new upgrade.
    again = await graphql(ops, UPGRADE, {"id": customer_id})
    assert again["data"]["customerKycLevelUpgrade"]["customer"]["kyc"]["upgrade"] == {"status": "STARTED"}, again
    applicant_id = (
        await graphql(ops, "query($id: ID!) { customer(id: $id) { kyc { applicantId } } }", {"id": customer_id})
    )["data"]["customer"]["kyc"]["applicantId"]
    review = await sumsub.get_review_status(applicant_id)
    assert (review.level_name, review.review_status, review.review_result) == ("advanced-kyc-level", "init", None)


async def test_refusals_are_precise_and_change_nothing(
    stack: DevStack,
    ops: httpx.AsyncClient,
    portal: httpx.AsyncClient,
    keycloak_admin: KeycloakAdmin,
    onboarded: Callable[[str], Any],
) -> None:
    mine, email = await onboarded("mine")
    other, _ = await onboarded("other")
    waiting = await register(portal, f"upgrade-waiting-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    await wait_for_stage(portal, waiting["id"], "AWAITING_KYC")

    assert code(await graphql(portal, UPGRADE, {"id": mine})) == "FORBIDDEN"
    async with await own_client(stack, keycloak_admin, email) as own:
        assert code(await graphql(own, UPGRADE, {"id": other})) == "FORBIDDEN"
    assert code(await graphql(ops, UPGRADE, {"id": str(uuid.uuid4())})) == "NOT_FOUND"
    bad = await graphql(ops, UPGRADE, {"id": "not-a-uuid"})
    assert bad["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "customerId"}
    not_onboarded = await graphql(ops, UPGRADE, {"id": waiting["id"]})
    assert code(not_onboarded) == "CONFLICT"
    assert "needs an onboarded customer (stage is AWAITING_KYC)" in not_onboarded["errors"][0]["message"]

    # The applicant's basic review is pending again at Sumsub (the customer submitted something new): Sumsub
    # refuses the level change, so the upgrade is refused and nothing is recorded.
    before = await kyc_of(ops, other)
    links = await graphql(ops, KYC_LINK, {"id": other})
    await press(links["data"]["customerKycLinkCreate"]["url"], "submit")
    refused = await graphql(ops, UPGRADE, {"id": other})
    assert code(refused) == "CONFLICT"
    assert "review is pending" in refused["errors"][0]["message"], refused
    after = await kyc_of(ops, other)
    assert after == before and after["kyc"]["upgrade"] is None
    types = [e["type"] for e in (await graphql(ops, EVENTS, {"id": other}))["data"]["customer"]["events"]]
    assert not any(t.startswith("kyc.upgrade") for t in types)

    # One upgrade at a time.
    assert "errors" not in await graphql(ops, UPGRADE, {"id": mine})
    again = await graphql(ops, UPGRADE, {"id": mine})
    assert code(again) == "CONFLICT" and "already in progress" in again["errors"][0]["message"]
