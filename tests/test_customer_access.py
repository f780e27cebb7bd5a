"""Least privilege, on the real stack with real tokens: who may call what.

- A customer who onboarded signs in through the Keycloak emulator, by the password grant (the dev-only
  client) and by the portal's authorization code flow with PKCE (its login form driven as a browser
  would), and with that token sees `me`, its own `customer(id)` and creates its own KYC link; another
  customer's id (real or guessed), `customers`, `customerByEmail`, the audit trail, another's KYC link,
  registering and ops' changes are FORBIDDEN, with no data.
- The portal's service account registers, reads one customer by id and creates a KYC link; listing,
  lookup by email and the audit trail are FORBIDDEN: a leaked portal secret does not expose every customer.
- Ops keep everything.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

from dev.stack import DevStack
from tests.support.emulators import browser_token, password_token
from tests.support.graphql import CUSTOMER_FIELDS, finish_onboarding, graphql, register

PASSWORD = "a customer's own password"
ME = f"{{ me {{ {CUSTOMER_FIELDS} }} }}"
GET = f"query Get($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_FIELDS} }} }}"
EVENTS = "query Events($id: ID!) { customer(id: $id) { id events { type actor } } }"
LIST = "{ customers(first: 100) { edges { node { id email } } } }"
BY_EMAIL = "query ByEmail($email: String!) { customerByEmail(email: $email) { id email } }"
KYC_LINK = "mutation Link($id: ID!) { customerKycLinkCreate(input: {customerId: $id}) { url } }"
REGISTER = """mutation Register($email: String!) {
  customerRegister(input: {email: $email, customerType: INDIVIDUAL}) { customer { id } }
}"""
SUSPEND = """mutation Suspend($id: ID!) {
  customerSuspend(input: {customerId: $id, reason: "mine"}) { customer { id } }
}"""
NOT_YOURS = "a customer may see and act on their own customer only"


@dataclass(frozen=True)
class Onboarded:
    id: str
    email: str
    keycloak_user_id: str


@pytest_asyncio.fixture(scope="module")
async def customers(stack: DevStack, portal: httpx.AsyncClient) -> tuple[Onboarded, Onboarded]:
    """Two onboarded customers, each with a password set through Keycloak's admin API (what the
    UPDATE_PASSWORD e-mail lets a real customer do); their users are the ones the worker provisioned."""
    run = uuid.uuid4().hex[:8]
    emails = [f"own-{name}-{run}@access.example" for name in ("alice", "bob")]
    registered = [await register(portal, email, "INDIVIDUAL") for email in emails]
    for customer in registered:
        await finish_onboarding(portal, customer["id"])
    connection = KeycloakOpenIDConnection(
        server_url=stack.keycloak_url + "/",
        realm_name="customers",
        client_id="customer-lifecycle",
        client_secret_key="customer-lifecycle-dev-secret",
    )
    admin = KeycloakAdmin(connection=connection)
    onboarded = []
    try:
        for email, customer in zip(emails, registered, strict=True):
            [user] = await admin.a_get_users({"email": email, "exact": True})
            assert user["attributes"]["customer_id"] == [customer["id"]]
            # The worker gave the user the realm role the API knows a customer's token by.
            assert [role["name"] for role in await admin.a_get_realm_roles_of_user(user["id"])] == ["customer"]
            await admin.a_set_user_password(user["id"], PASSWORD, temporary=False)
            onboarded.append(Onboarded(id=customer["id"], email=email, keycloak_user_id=user["id"]))
    finally:
        await connection.keycloak_openid.connection.aclose()
        await connection.aclose()
    return onboarded[0], onboarded[1]


@pytest_asyncio.fixture(scope="module", params=["password grant", "authorization code with PKCE"])
async def alice(
    request: pytest.FixtureRequest, stack: DevStack, customers: tuple[Onboarded, Onboarded]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as the first customer calls it, with a token from each way a customer signs in."""
    login = password_token if request.param == "password grant" else browser_token
    token = await login(stack.keycloak_url, customers[0].email, PASSWORD)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert (claims["sub"], claims["customer_id"]) == (customers[0].keycloak_user_id, customers[0].id)
    assert "customer" in claims["realm_access"]["roles"] and claims["exp"] - claims["iat"] == 300
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        yield http


def codes(body: dict[str, Any]) -> list[Any]:
    return [error.get("extensions") for error in body.get("errors", [])]


async def test_a_customer_sees_its_own_customer_and_creates_its_own_kyc_link(
    alice: httpx.AsyncClient, stack: DevStack, customers: tuple[Onboarded, Onboarded]
) -> None:
    mine = customers[0]
    me = await graphql(alice, ME, {})
    assert "errors" not in me, me
    assert (me["data"]["me"]["id"], me["data"]["me"]["email"]) == (mine.id, mine.email)
    assert me["data"]["me"]["onboarding"]["stage"] == "ONBOARDED"

    own = await graphql(alice, GET, {"id": mine.id.upper()})
    assert "errors" not in own, own
    assert own["data"]["customer"] == me["data"]["me"]

    link = await graphql(alice, KYC_LINK, {"id": mine.id})
    assert "errors" not in link, link
    url = link["data"]["customerKycLinkCreate"]["url"]
    assert url.startswith(stack.sumsub_url)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 200


async def test_a_customer_reads_its_own_profile(
    alice: httpx.AsyncClient, customers: tuple[Onboarded, Onboarded]
) -> None:
    profile = "{ provided { firstName companyName } verified { personalInfo { lastName dateOfBirth } companyInfo { companyName } } }"
    for query, variables in (
        (f"{{ me {{ profile {profile} }} }}", {}),
        (f"query G($id: ID!) {{ customer(id: $id) {{ profile {profile} }} }}", {"id": customers[0].id}),
    ):
        body = await graphql(alice, query, variables)
        assert "errors" not in body, body
        [customer] = body["data"].values()
        # Nothing provided, nothing typed into the WebSDK page: verified but empty, never a placeholder.
        assert customer["profile"] == {
            "provided": {"firstName": None, "companyName": None},
            "verified": {"personalInfo": {"lastName": None, "dateOfBirth": None}, "companyInfo": None},
        }


async def test_a_customer_is_refused_anything_but_its_own_customer(
    alice: httpx.AsyncClient, portal: httpx.AsyncClient, customers: tuple[Onboarded, Onboarded]
) -> None:
    mine, other = customers
    for _ in range(3):  # the portal's answer for the other customer is kept (api/read_cache.py): not for alice
        assert (await graphql(portal, GET, {"id": other.id}))["data"]["customer"]["email"] == other.email
    guessed = str(uuid.uuid4())
    refusals: list[tuple[str, str, dict[str, Any]]] = [
        ("another customer's id", GET, {"id": other.id}),
        ("a guessed id", GET, {"id": guessed}),
        ("another customer's KYC link", KYC_LINK, {"id": other.id}),
        ("a guessed id's KYC link", KYC_LINK, {"id": guessed}),
        ("the list", LIST, {}),
        ("lookup by another's email", BY_EMAIL, {"email": other.email}),
        ("lookup by its own email", BY_EMAIL, {"email": mine.email}),
        ("its own audit trail", EVENTS, {"id": mine.id}),
        ("another's audit trail", EVENTS, {"id": other.id}),
        ("registering", REGISTER, {"email": f"new-{guessed}@access.example"}),
        ("an ops change of its own customer", SUSPEND, {"id": mine.id}),
    ]
    answers = {}
    for name, document, variables in refusals:
        body = await graphql(alice, document, variables)
        assert codes(body) == [{"code": "FORBIDDEN"}], (name, body)
        assert body["data"] is None or set(body["data"].values()) == {None}, (name, body)
        assert other.email not in json.dumps(body) and other.keycloak_user_id not in json.dumps(body), name
        answers[name] = body
    # An existing and a made-up id get the same answer: nothing tells whether another customer exists.
    assert answers["another customer's id"] == answers["a guessed id"]
    assert answers["another customer's id"]["errors"][0]["message"] == NOT_YOURS
    assert answers["another customer's KYC link"] == answers["a guessed id's KYC link"]


async def test_the_portal_registers_reads_one_and_links_but_neither_lists_nor_looks_up_nor_reads_events(
    portal: httpx.AsyncClient, customers: tuple[Onboarded, Onboarded]
) -> None:
    mine, other = customers
    for name, document, variables in (
        ("the list", LIST, {}),
        ("lookup by email", BY_EMAIL, {"email": other.email}),
        ("the audit trail", EVENTS, {"id": other.id}),
    ):
        body = await graphql(portal, document, variables)
        assert codes(body) == [{"code": "FORBIDDEN"}], (name, body)
        assert body["data"] is None or set(body["data"].values()) == {None}, (name, body)
        assert other.email not in json.dumps(body) and mine.email not in json.dumps(body), name

    one = await graphql(portal, GET, {"id": other.id})
    assert "errors" not in one and one["data"]["customer"]["email"] == other.email
    link = await graphql(portal, KYC_LINK, {"id": other.id})
    assert "errors" not in link, link
    again = await graphql(portal, REGISTER, {"email": other.email})  # idempotent per email
    assert "errors" not in again and again["data"]["customerRegister"]["customer"]["id"] == other.id
    me = await graphql(portal, ME, {})
    assert me == {"data": {"me": None}}  # a service account is no customer


async def test_ops_keep_the_list_the_lookup_and_the_audit_trail(
    ops: httpx.AsyncClient, customers: tuple[Onboarded, Onboarded]
) -> None:
    mine, other = customers
    listed = await graphql(ops, LIST, {})
    assert "errors" not in listed, listed
    assert {mine.id, other.id} <= {edge["node"]["id"] for edge in listed["data"]["customers"]["edges"]}
    found = await graphql(ops, BY_EMAIL, {"email": other.email.upper()})
    assert found["data"]["customerByEmail"]["id"] == other.id
    trail = await graphql(ops, EVENTS, {"id": other.id})
    assert "errors" not in trail, trail
    types = [event["type"] for event in trail["data"]["customer"]["events"]]
    assert {"customer.registered", "customer.activated"} <= set(types)
