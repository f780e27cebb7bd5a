"""The read side of the GraphQL API and the verification link, against the real stack.

`customers` (keyset pages over the PostgreSQL projection) and `customerByEmail` are ops' (the portal is
refused them), `me` and `customerKycLinkCreate`. Customers' own tokens from the Keycloak emulator are in
tests/test_customer_access.py; here the edge cases of a customer's token (a claim that matches no
provisioned user, say) run the schema directly with a `Principal`, over the same services the API
builds: a real pool, a real Temporal client and the real Sumsub client.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

import db.customers
import db.pool
from api.app import app_services
from api.auth import Principal
from api.schema import Context, schema
from api.service import encode_cursor
from api.state import AppState
from dev.stack import DevStack
from domain.customer import CustomerStatus, CustomerType, KycStatus, OnboardingStage
from tests.support.graphql import graphql, press, register, wait_for_stage

CUSTOMERS = """
query List($first: Int!, $after: String, $filter: CustomerFilter, $sort: CustomerSort) {
  customers(first: $first, after: $after, filter: $filter, sort: $sort) {
    edges { cursor node { id email customerType status createdAt kyc { status } onboarding { stage } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
BY_EMAIL = "query ByEmail($email: String!) { customerByEmail(email: $email) { id email onboarding { stage } } }"
ME = "{ me { id email status onboarding { stage } } }"
KYC_LINK = "mutation Link($id: ID!) { customerKycLinkCreate(input: {customerId: $id}) { url } }"


# --- helpers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """A customer this module registered, as the projection holds it."""

    id: str
    email: str
    customer_type: str
    status: str
    kyc_status: str
    stage: str
    created_at: datetime
    keycloak_user_id: str | None


def newest_first(customers: list[Known]) -> list[str]:
    # PostgreSQL orders uuids bytewise, which is the order of their canonical lower-case text.
    return [c.id for c in sorted(customers, key=lambda c: (c.created_at, c.id), reverse=True)]


async def list_page(http: httpx.AsyncClient, **variables: Any) -> dict[str, Any]:
    body = await graphql(http, CUSTOMERS, {"first": 20, **variables})
    assert "errors" not in body, body
    return body["data"]["customers"]


async def list_all(http: httpx.AsyncClient, *, first: int, **variables: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """Every node, following `endCursor` while `hasNextPage`; also the size of each page."""
    nodes: list[dict[str, Any]] = []
    sizes: list[int] = []
    after = None
    while True:
        page = await list_page(http, first=first, after=after, **variables)
        edges = page["edges"]
        nodes += [edge["node"] for edge in edges]
        sizes.append(len(edges))
        assert page["pageInfo"]["endCursor"] == (edges[-1]["cursor"] if edges else None)
        if not page["pageInfo"]["hasNextPage"]:
            return nodes, sizes
        assert len(edges) == first
        after = page["pageInfo"]["endCursor"]


def error_codes(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [error.get("extensions") for error in body.get("errors", [])]


async def projection(database: asyncpg.Pool, ids: list[str]) -> dict[str, Known]:
    rows = await database.fetch(
        "SELECT id::text, email, customer_type, status, kyc_status, onboarding_stage, created_at, keycloak_user_id "
        "FROM customers WHERE id = any($1::uuid[])",
        ids,
    )
    return {r["id"]: Known(*r.values()) for r in rows}


async def wait_for_projection(
    database: asyncpg.Pool, expected: dict[str, str], timeout: float = 30.0
) -> dict[str, Known]:
    """Waits until the projection (what `customers` reads) shows each customer at its expected stage."""
    deadline = time.monotonic() + timeout
    while True:
        known = await projection(database, list(expected))
        if all(cid in known and known[cid].stage == stage for cid, stage in expected.items()):
            return known
        if time.monotonic() > deadline:
            raise AssertionError(f"projection never reached {expected}; last seen {known}")
        await asyncio.sleep(0.1)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def listed(portal: httpx.AsyncClient, database: asyncpg.Pool) -> dict[str, Known]:
    """Seven customers of two types; one of each type onboarded (ACTIVE), the rest waiting for KYC."""
    plan = [
        ("INDIVIDUAL", True),
        ("INDIVIDUAL", False),
        ("INDIVIDUAL", False),
        ("INDIVIDUAL", False),
        ("PRIVATE_COMPANY", True),
        ("PRIVATE_COMPANY", False),
        ("PRIVATE_COMPANY", False),
    ]
    run = uuid.uuid4().hex[:8]
    registered = [await register(portal, f"list-{i}-{run}@paging.example", t) for i, (t, _) in enumerate(plan)]
    waiting = await asyncio.gather(*(wait_for_stage(portal, c["id"], "AWAITING_KYC") for c in registered))
    expected: dict[str, str] = {}
    for customer, (_, onboard) in zip(waiting, plan, strict=True):
        expected[customer["id"]] = "ONBOARDED" if onboard else "AWAITING_KYC"
        if onboard:
            await press(customer["kyc"]["verificationUrl"], "submit")
            await wait_for_stage(portal, customer["id"], "KYC_IN_REVIEW")
            await press(customer["kyc"]["verificationUrl"], "approve")
    return await wait_for_projection(database, expected)


def window(listed: dict[str, Known]) -> dict[str, str]:
    """A createdAfter/createdBefore filter holding exactly the module's customers (nothing else registers meanwhile)."""
    times = [c.created_at for c in listed.values()]
    return {
        "createdAfter": min(times).isoformat(),
        "createdBefore": (max(times) + timedelta(microseconds=1)).isoformat(),
    }


@pytest_asyncio.fixture(scope="module")
async def services(stack: DevStack) -> AsyncIterator[AppState]:
    """The services the API builds in its lifespan, built here so the schema runs with any Principal."""
    settings = stack.settings()
    async with app_services(settings.model_copy(update={"database_pool_size": 2})) as services:
        yield services


def as_customer(
    services: AppState,
    *,
    customer_id: str | None = None,
    subject: str | None = None,
    roles: frozenset[str] = frozenset({"customer", "default-roles-customers"}),
) -> Context:
    """What a customer's own access token verifies to: realm role `customer`, the `customer_id` claim,
    `sub` its Keycloak user."""
    principal = Principal(
        subject=subject or str(uuid.uuid4()), client_id="customer-portal", roles=roles, customer_id=customer_id
    )
    return Context(services=services, principal=principal)


# --- customers: pages, cursors, filters, sort ----------------------------------------------------------


async def test_customers_pages_through_newest_first_then_oldest_first(
    ops: httpx.AsyncClient, listed: dict[str, Known]
) -> None:
    expected = newest_first(list(listed.values()))
    nodes, sizes = await list_all(ops, first=3, filter=window(listed))
    assert [n["id"] for n in nodes] == expected
    assert sizes == [3, 3, 1]

    nodes, sizes = await list_all(ops, first=3, filter=window(listed), sort={"field": "CREATED_AT", "direction": "ASC"})
    assert [n["id"] for n in nodes] == expected[::-1]
    assert sizes == [3, 3, 1]

    # Exactly one page's worth: no phantom next page.
    page = await list_page(ops, first=7, filter=window(listed))
    assert [e["node"]["id"] for e in page["edges"]] == expected and page["pageInfo"]["hasNextPage"] is False
    # A cursor is a place in the list: the page after the 2nd customer starts with the 3rd.
    page = await list_page(ops, first=2, after=page["edges"][1]["cursor"], filter=window(listed))
    assert [e["node"]["id"] for e in page["edges"]] == expected[2:4] and page["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize(
    "extra",
    [
        {"customerType": "INDIVIDUAL"},
        {"customerType": "PRIVATE_COMPANY"},
        {"stage": "ONBOARDED"},
        {"stage": "AWAITING_KYC"},
        {"status": "ACTIVE"},
        {"status": "INACTIVE"},
        {"kycStatus": "APPROVED"},
        {"customerType": "INDIVIDUAL", "status": "INACTIVE"},
        {"customerType": "BANK"},
    ],
    ids=lambda extra: ",".join(f"{k}={v}" for k, v in extra.items()),
)
async def test_customers_filters(ops: httpx.AsyncClient, listed: dict[str, Known], extra: dict[str, str]) -> None:
    columns = {"customerType": "customer_type", "stage": "stage", "status": "status", "kycStatus": "kyc_status"}
    matching = [c for c in listed.values() if all(getattr(c, columns[k]) == v for k, v in extra.items())]
    nodes, _ = await list_all(ops, first=2, filter={**window(listed), **extra})
    assert [n["id"] for n in nodes] == newest_first(matching)
    for node in nodes:
        known = listed[node["id"]]
        shown = (node["customerType"], node["status"], node["kyc"]["status"], node["onboarding"]["stage"])
        assert shown == (known.customer_type, known.status, known.kyc_status, known.stage)


async def test_created_range_is_half_open(ops: httpx.AsyncClient, listed: dict[str, Known]) -> None:
    ordered = sorted(listed.values(), key=lambda c: (c.created_at, c.id))
    cut = ordered[3].created_at
    before, _ = await list_all(ops, first=20, filter={**window(listed), "createdBefore": cut.isoformat()})
    since, _ = await list_all(ops, first=20, filter={**window(listed), "createdAfter": cut.isoformat()})
    assert {n["id"] for n in before} == {c.id for c in ordered if c.created_at < cut}
    assert {n["id"] for n in since} == {c.id for c in ordered if c.created_at >= cut}


async def test_the_portal_may_neither_list_customers_nor_look_them_up_by_email(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, listed: dict[str, Known]
) -> None:
    """A leaked portal secret must not page through every customer: listing and lookup are ops'."""
    customer = next(iter(listed.values()))
    for document, variables in (
        (CUSTOMERS, {"first": 100, "filter": window(listed)}),
        (BY_EMAIL, {"email": customer.email}),
    ):
        body = await graphql(portal, document, variables)
        assert error_codes(body) == [{"code": "FORBIDDEN"}], body
        assert body["data"] is None or set(body["data"].values()) == {None}, body  # a nullable field is null
        assert customer.email not in json.dumps(body)
    page = await list_page(ops, first=100, filter=window(listed))
    assert len(page["edges"]) == len(listed)


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": -1}, "first"),
        ({"first": 101}, "first"),
        ({"after": "not a cursor"}, "after"),
        ({"after": "bm90IGEgY3Vyc29y"}, "after"),  # base64 of "not a cursor"
        (
            {
                "after": encode_cursor(
                    db.customers.CustomerKey(datetime(2024, 1, 1), "00000000-0000-8000-8000-000000000000")
                )
            },
            "after",
        ),
    ],
    ids=["first=0", "first=-1", "first=101", "garbage", "base64 garbage", "no time zone"],
)
async def test_customers_refuses_a_bad_page_request(
    ops: httpx.AsyncClient, variables: dict[str, Any], field: str
) -> None:
    body = await graphql(ops, CUSTOMERS, {"first": 20, **variables})
    assert body["data"] is None
    assert error_codes(body) == [{"code": "BAD_USER_INPUT", "field": field}]


# --- customerByEmail --------------------------------------------------------------------------------


async def test_customer_by_email_in_any_letter_case(ops: httpx.AsyncClient, listed: dict[str, Known]) -> None:
    customer = next(iter(listed.values()))
    for spelling in (customer.email.upper(), f"  {customer.email.title()} "):
        body = await graphql(ops, BY_EMAIL, {"email": spelling})
        assert "errors" not in body, body
        assert body["data"]["customerByEmail"]["id"] == customer.id
        assert body["data"]["customerByEmail"]["email"] == customer.email
    body = await graphql(ops, BY_EMAIL, {"email": "nobody-at-all@paging.example"})
    assert body == {"data": {"customerByEmail": None}}
    body = await graphql(ops, BY_EMAIL, {"email": "not-an-email"})
    assert error_codes(body) == [{"code": "BAD_USER_INPUT", "field": "email"}]


# --- me ---------------------------------------------------------------------------------------------


async def test_me_is_the_customer_the_token_belongs_to(
    portal: httpx.AsyncClient, services: AppState, listed: dict[str, Known]
) -> None:
    customer = next(c for c in listed.values() if c.stage == "ONBOARDED")
    assert customer.keycloak_user_id is not None

    mine = as_customer(services, customer_id=customer.id, subject=customer.keycloak_user_id)
    by_claim = await schema.execute(ME, context_value=mine)
    assert by_claim.errors is None, by_claim.errors
    assert by_claim.data == {
        "me": {"id": customer.id, "email": customer.email, "status": "ACTIVE", "onboarding": {"stage": "ONBOARDED"}}
    }

    # Nobody's: the claim without the Keycloak user provisioned for it, the user without the claim (a
    # token of a client without the mapper), the claim and user without the customer role, an unknown
    # or garbage claim.
    for context in (
        as_customer(services, customer_id=customer.id),
        as_customer(services, subject=customer.keycloak_user_id),
        as_customer(
            services, customer_id=customer.id, subject=customer.keycloak_user_id, roles=frozenset({"offline_access"})
        ),
        as_customer(services, customer_id=str(uuid.uuid4())),
        as_customer(services, customer_id="not-a-uuid", subject=customer.keycloak_user_id),
    ):
        nobody = await schema.execute(ME, context_value=context)
        assert nobody.errors is None and nobody.data == {"me": None}, context.principal

    # The audit trail is ops' alone, the customer's own included.
    trail = await schema.execute("{ me { id events { type } } }", context_value=mine)
    assert trail.errors is not None and [e.extensions for e in trail.errors] == [{"code": "FORBIDDEN"}]
    assert trail.data == {"me": None}

    # The portal's service account is no customer.
    body = await graphql(portal, ME, {})
    assert body == {"data": {"me": None}}


# --- customerKycLinkCreate --------------------------------------------------------------------------


async def test_portal_creates_a_fresh_kyc_link_that_works(
    portal: httpx.AsyncClient, stack: DevStack, listed: dict[str, Known]
) -> None:
    customer = next(c for c in listed.values() if c.stage == "AWAITING_KYC")
    urls = set()
    for _ in range(2):
        body = await graphql(portal, KYC_LINK, {"id": customer.id})
        assert "errors" not in body, body
        urls.add(body["data"]["customerKycLinkCreate"]["url"])
    assert len(urls) == 2  # fresh every time
    async with httpx.AsyncClient() as http:
        for url in urls:
            assert url.startswith(stack.sumsub_url)
            response = await http.get(url)
            assert response.status_code == 200, response.text


async def test_kyc_link_for_a_customer_themself_only(services: AppState, listed: dict[str, Known]) -> None:
    mine, other = [c for c in listed.values() if c.stage == "AWAITING_KYC"][:2]
    assert mine.keycloak_user_id is not None and other.keycloak_user_id is not None
    own_token = as_customer(services, customer_id=mine.id, subject=mine.keycloak_user_id)

    result = await schema.execute(KYC_LINK, variable_values={"id": mine.id}, context_value=own_token)
    assert result.errors is None, result.errors
    assert result.data is not None and result.data["customerKycLinkCreate"]["url"].startswith(
        services.settings.sumsub_base_url
    )

    for context, target in (
        (own_token, other.id),  # another, real customer
        (own_token, str(uuid.uuid4())),  # a guessed id: the same answer, so nothing tells it does not exist
        (as_customer(services, customer_id=other.id, subject=mine.keycloak_user_id), other.id),  # claim not its user's
        (as_customer(services, subject=mine.keycloak_user_id), mine.id),  # no claim
        (as_customer(services), mine.id),  # a customer token that maps to no customer
    ):
        result = await schema.execute(KYC_LINK, variable_values={"id": target}, context_value=context)
        assert result.data is None
        assert result.errors is not None and [e.extensions for e in result.errors] == [{"code": "FORBIDDEN"}]


async def test_kyc_link_needs_an_existing_customer_with_an_applicant(
    portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    body = await graphql(portal, KYC_LINK, {"id": str(uuid.uuid4())})
    assert error_codes(body) == [{"code": "NOT_FOUND"}]
    body = await graphql(portal, KYC_LINK, {"id": "not-a-uuid"})
    assert error_codes(body) == [{"code": "BAD_USER_INPUT", "field": "customerId"}]

    # A customer still REGISTERED (no applicant yet), as the projection shows it when its workflow is not reachable.
    customer_id = str(uuid.uuid4())
    await database.execute(
        """
        INSERT INTO customers (id, state, workflow_id, created_at, updated_at)
        VALUES ($1::uuid, jsonb_build_object(
            'registration', jsonb_build_object('customer_id', $1::text, 'email', $2::text, 'customer_type', 'INDIVIDUAL'),
            'status', 'INACTIVE', 'kyc_status', 'NOT_STARTED', 'kyc_level', 'NOT_KYCED', 'stage', 'REGISTERED',
            'created_at', now(), 'updated_at', now()), $3, now(), now())
        """,
        customer_id,
        f"registered-{customer_id}@paging.example",
        f"customer-{customer_id}",
    )
    try:
        body = await graphql(portal, KYC_LINK, {"id": customer_id})
        assert error_codes(body) == [{"code": "CONFLICT"}]
    finally:
        await database.execute("DELETE FROM customers WHERE id = $1", customer_id)


# --- the read model ------------------------------------------------------------------------------


PROJECTED = """
query Read($id: ID!) { customer(id: $id) { email kyc { moderationComment } onboarding { stage currentStep } } }
"""
EMAIL_UPDATE = """
mutation Email($id: ID!, $email: String!) { customerEmailUpdate(input: {customerId: $id, email: $email}) { customer { email } } }
"""


async def test_reads_are_the_projection_and_a_callers_own_write_is_read_back(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    registered = await register(portal, f"read-model-{run}@projection.example", "INDIVIDUAL")
    # The very next read finds the customer, whether the workflow's first record has committed yet or not.
    first = await graphql(portal, PROJECTED, {"id": registered["id"]})
    assert "errors" not in first and first["data"]["customer"] is not None, first
    await wait_for_stage(portal, registered["id"], "AWAITING_KYC")

    # What the API answers is the projection's document: a value written only there is what it shows. The row
    # is dated ahead meanwhile, so a change the workflow records now (a Sumsub webhook) cannot overwrite it.
    marker = f"only-in-the-projection-{run}"
    recorded_at = await database.fetchval(
        """
        UPDATE customers SET state = jsonb_set(state, '{moderation_comment}', to_jsonb($2::text)),
            updated_at = updated_at + interval '1 day'
        WHERE id = $1 RETURNING updated_at - interval '1 day'
        """,
        registered["id"],
        marker,
    )
    read = await graphql(portal, PROJECTED, {"id": registered["id"]})
    await database.execute("UPDATE customers SET updated_at = $2 WHERE id = $1", registered["id"], recorded_at)
    assert "errors" not in read, read
    assert read["data"]["customer"]["kyc"]["moderationComment"] == marker
    assert read["data"]["customer"]["onboarding"] == {"stage": "AWAITING_KYC", "currentStep": None}

    # An update answers once its change is recorded, so its caller's next read shows it (no waiting).
    moved = f"read-model-moved-{run}@projection.example"
    changed = await graphql(ops, EMAIL_UPDATE, {"id": registered["id"], "email": moved})
    assert changed == {"data": {"customerEmailUpdate": {"customer": {"email": moved}}}}, changed
    after = (await graphql(ops, PROJECTED, {"id": registered["id"]}))["data"]["customer"]
    assert after["email"] == moved
    assert after["kyc"]["moderationComment"] is None  # the workflow's state replaced the document

    unknown = await graphql(portal, PROJECTED, {"id": str(uuid.uuid4())})
    assert unknown == {"data": {"customer": None}}


# --- 100,000 customers: index use, page time, complete paging -------------------------------------------

SEED_ROWS = 100_000
SEED_DOMAIN = "seed.paging.example"
SEED_START = datetime.fromisoformat("2020-01-01T00:00:00+00:00")
SEED_END = datetime.fromisoformat("2021-01-01T00:00:00+00:00")  # every seeded row is older; every real one newer

# How often each value occurs, per mille: a bank's book is mostly onboarded individuals; the values ops
# look for (banks, failed or on-hold onboarding, suspended customers) are rare, which is when a filter's
# own index must be chosen. Status and KYC status follow from the stage, as in the real projection.
TYPE_MIX = {
    "INDIVIDUAL": 900,
    "PRIVATE_COMPANY": 80,
    "GOVERNMENT_ENTITY": 5,
    "BANK": 3,
    "FINANCIAL_INSTITUTION": 6,
    "FOREIGN_AGENCY_OR_SUBSIDIARY": 3,
    "NON_DOMICILED_COMPANY": 3,
}
STAGE_MIX = {
    "ONBOARDED": 690,
    "AWAITING_KYC": 150,
    "KYC_IN_REVIEW": 80,
    "KYC_ON_HOLD": 10,
    "KYC_RESUBMISSION_REQUESTED": 20,
    "KYC_DECLINED": 25,
    "EXPIRED": 10,
    "FAILED": 3,
    "CLOSED": 10,
    "REGISTERED": 1,
    "KYC_APPROVED": 1,
}
KYC_STATUS_OF_STAGE = {
    "REGISTERED": "NOT_STARTED",
    "FAILED": "NOT_STARTED",
    "AWAITING_KYC": "STARTED",
    "EXPIRED": "STARTED",
    "KYC_IN_REVIEW": "PENDING",
    "KYC_ON_HOLD": "ON_HOLD",
    "KYC_RESUBMISSION_REQUESTED": "RESUBMISSION_REQUESTED",
    "KYC_APPROVED": "APPROVED",
    "ONBOARDED": "APPROVED",
    "CLOSED": "APPROVED",
    "KYC_DECLINED": "DECLINED",
}
SUSPENDED_PER_MILLE_OF_ONBOARDED = 15


def weighted(mix: dict[str, int]) -> list[str]:
    """1000 values in which each occurs as often as `mix` says; a row picks one by a hash of its number."""
    values = [value for value, per_mille in mix.items() for _ in range(per_mille)]
    assert len(values) == 1000
    return values


@pytest_asyncio.fixture(scope="module")
async def seeded(database: asyncpg.Pool) -> AsyncIterator[int]:
    """100,000 customers, two per minute from 2020-01-01 (pairs share created_at, so the id breaks the tie);
    type and stage drawn by the mixes above; ACTIVE ones hold a deposit account, as in production."""
    assert set(TYPE_MIX) == set(CustomerType) and set(STAGE_MIX) == set(KYC_STATUS_OF_STAGE) == set(OnboardingStage)
    started = time.perf_counter()
    await database.execute(
        """
        INSERT INTO customers (id, state, workflow_id, created_at, updated_at)
        SELECT id,
               jsonb_build_object(
                   'registration', jsonb_build_object('customer_id', id::text, 'email', email, 'customer_type', customer_type),
                   'status', CASE WHEN stage <> 'ONBOARDED' THEN 'INACTIVE'
                                  WHEN abs(hashtext('suspended-' || i)) % 1000 < $5 THEN 'SUSPENDED' ELSE 'ACTIVE' END,
                   'kyc_status', ($4::jsonb) ->> stage,
                   'kyc_level', CASE WHEN stage = 'ONBOARDED' THEN 'BASIC' ELSE 'NOT_KYCED' END,
                   'stage', stage, 'created_at', created_at, 'updated_at', created_at),
               'customer-' || id, created_at, created_at
        FROM (
            SELECT i, md5('seed-' || i)::uuid AS id, 'seed-' || i || '@' || $1 AS email,
                   ($2::text[])[1 + abs(hashtext('type-' || i)) % 1000] AS customer_type,
                   ($3::text[])[1 + abs(hashtext('stage-' || i)) % 1000] AS stage,
                   $6::timestamptz + (i / 2) * interval '1 minute' AS created_at
            FROM generate_series(1, $7::int) AS i
        ) AS seed
        """,
        SEED_DOMAIN,
        weighted(TYPE_MIX),
        weighted(STAGE_MIX),
        json.dumps(KYC_STATUS_OF_STAGE),
        SUSPENDED_PER_MILLE_OF_ONBOARDED,
        SEED_START,
        SEED_ROWS,
    )
    inserted = time.perf_counter()
    await database.execute(
        """
        INSERT INTO deposit_accounts (id, customer_id, category, status)
        SELECT md5('account-' || id)::uuid, id, 'INDIVIDUAL', 'ACTIVE' FROM customers
        WHERE created_at < $1 AND email LIKE '%@' || $2 AND status <> 'INACTIVE'
        """,
        SEED_END,
        SEED_DOMAIN,
    )
    await database.execute("ANALYZE customers; ANALYZE deposit_accounts")
    print(
        f"\nseeded {SEED_ROWS} customers in {inserted - started:.2f}s (+ deposit accounts, ANALYZE: "
        f"{time.perf_counter() - inserted:.2f}s)"
    )
    try:
        yield SEED_ROWS
    finally:
        await database.execute(
            "DELETE FROM deposit_accounts WHERE customer_id IN "
            "(SELECT id FROM customers WHERE created_at < $1 AND email LIKE '%@' || $2)",
            SEED_END,
            SEED_DOMAIN,
        )
        await database.execute(
            "DELETE FROM customers WHERE created_at < $1 AND email LIKE '%@' || $2", SEED_END, SEED_DOMAIN
        )
        await database.execute("ANALYZE customers; ANALYZE deposit_accounts")


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in plan_nodes(child))]


def describe(plan: dict[str, Any], depth: int = 0) -> str:
    on = f" on {plan['Relation Name']}" if "Relation Name" in plan else ""
    index = f" using {plan['Index Name']}" if "Index Name" in plan else ""
    rows = f" (rows={plan['Actual Rows']})" if "Actual Rows" in plan else ""
    line = f"{'  ' * depth}{plan['Node Type']}{on}{index}{rows}"
    return "\n".join([line, *(describe(child, depth + 1) for child in plan.get("Plans", []))])


DAY = timedelta(days=1)
S, T, K, G = CustomerStatus, CustomerType, KycStatus, OnboardingStage

# One filter each (a common and a rare value), and combinations a screen would use. A rare value must be
# read from its own index (0002); for a common one, reading the (created_at, id) index and skipping the
# few non-matching rows is as cheap, and the planner may choose either.
SINGLE_FILTERS: list[tuple[str, db.customers.CustomerFilter, str | None]] = [
    ("none", db.customers.CustomerFilter(), "customers_created_at_id"),
    ("status=ACTIVE", db.customers.CustomerFilter(status=S.ACTIVE), None),
    ("status=SUSPENDED", db.customers.CustomerFilter(status=S.SUSPENDED), "customers_status_created_at_id"),
    ("customerType=INDIVIDUAL", db.customers.CustomerFilter(customer_type=T.INDIVIDUAL), None),
    ("customerType=BANK", db.customers.CustomerFilter(customer_type=T.BANK), "customers_customer_type_created_at_id"),
    ("kycStatus=APPROVED", db.customers.CustomerFilter(kyc_status=K.APPROVED), None),
    ("kycStatus=ON_HOLD", db.customers.CustomerFilter(kyc_status=K.ON_HOLD), "customers_kyc_status_created_at_id"),
    ("stage=AWAITING_KYC", db.customers.CustomerFilter(stage=G.AWAITING_KYC), None),
    ("stage=FAILED", db.customers.CustomerFilter(stage=G.FAILED), "customers_onboarding_stage_created_at_id"),
    ("createdAfter", db.customers.CustomerFilter(created_after=SEED_START + 10 * DAY), "customers_created_at_id"),
    ("createdBefore", db.customers.CustomerFilter(created_before=SEED_START + 20 * DAY), "customers_created_at_id"),
    (
        "created range",
        db.customers.CustomerFilter(created_after=SEED_START + 10 * DAY, created_before=SEED_START + 20 * DAY),
        "customers_created_at_id",
    ),
]
# Combined filters: one index is read and the other conditions checked on its rows. When the combination
# is rarer than either part (here: correlated columns), the planner may instead intersect two indexes
# and sort the few matches; what must never happen is reading or sorting the whole table.
COMBINED_FILTERS: list[tuple[str, db.customers.CustomerFilter, None]] = [
    (
        "type=PRIVATE_COMPANY+stage=AWAITING_KYC",
        db.customers.CustomerFilter(customer_type=T.PRIVATE_COMPANY, stage=G.AWAITING_KYC),
        None,
    ),
    (
        "status=SUSPENDED+type=INDIVIDUAL+range",
        db.customers.CustomerFilter(
            status=S.SUSPENDED, customer_type=T.INDIVIDUAL, created_before=SEED_START + 20 * DAY
        ),
        None,
    ),
    (
        "all four, common",
        db.customers.CustomerFilter(
            status=S.ACTIVE, customer_type=T.INDIVIDUAL, kyc_status=K.APPROVED, stage=G.ONBOARDED
        ),
        None,
    ),
    (
        "status=ACTIVE+stage=AWAITING_KYC (none)",
        db.customers.CustomerFilter(status=S.ACTIVE, stage=G.AWAITING_KYC),
        None,
    ),
    (
        "kycStatus=APPROVED+stage=KYC_ON_HOLD (none)",
        db.customers.CustomerFilter(kyc_status=K.APPROVED, stage=G.KYC_ON_HOLD),
        None,
    ),
]
MAX_SORTED_ROWS = 1000  # 1% of the table: a sort of the few matches of a rare combination, never of the table


async def test_customer_pages_use_an_index_at_100k_customers(database: asyncpg.Pool, seeded: int) -> None:
    assert await database.fetchval("SELECT count(*) FROM customers") >= seeded
    middle = await database.fetchrow(
        "SELECT created_at, id::text FROM customers WHERE created_at < $1 ORDER BY created_at, id OFFSET $2 LIMIT 1",
        SEED_END,
        seeded // 2,
    )
    mid_key = db.customers.CustomerKey(created_at=middle["created_at"], customer_id=middle["id"])
    report = []
    for name, customer_filter, expected_index in [*SINGLE_FILTERS, *COMBINED_FILTERS]:
        single = (name, customer_filter, expected_index) in SINGLE_FILTERS
        for after in (None, mid_key):
            for descending in (True, False):
                sql, args = db.customers.customer_page_query(
                    customer_filter, after=after, descending=descending, limit=21
                )
                async with database.acquire() as conn:
                    explained = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
                    timings = []
                    for _ in range(7):  # past the 5 custom plans, so the generic plan is measured too
                        started = time.perf_counter()
                        rows = await conn.fetch(sql, *args)
                        timings.append(time.perf_counter() - started)
                top = (json.loads(explained) if isinstance(explained, str) else explained)[0]
                nodes = plan_nodes(top["Plan"])
                case = f"{name} after={'middle' if after else 'start'} {'DESC' if descending else 'ASC'}"
                shown = describe(top["Plan"])
                on_customers = [n for n in nodes if n.get("Relation Name") == "customers"]
                sorts = [n for n in nodes if "Sort" in n["Node Type"]]
                assert on_customers and not any(n["Node Type"] == "Seq Scan" for n in on_customers), f"{case}\n{shown}"
                if single:
                    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in on_customers), (
                        f"{case}\n{shown}"
                    )
                    assert not sorts, f"{case}\n{shown}"
                else:
                    assert all(n["Plans"][0]["Actual Rows"] <= MAX_SORTED_ROWS for n in sorts), f"{case}\n{shown}"
                if expected_index is not None:
                    assert [n.get("Index Name") for n in on_customers] == [expected_index], f"{case}\n{shown}"
                assert len(rows) <= 21
                report.append(
                    f"{case:<45} rows={len(rows):>2} exec={top['Execution Time']:.3f}ms "
                    f"median={sorted(timings)[3] * 1000:.3f}ms  {' / '.join(n.get('Index Name', '') for n in on_customers)}"
                )
                if after is None and descending and not single:
                    report.append(shown)
    print("\npage query (LIMIT 21) at", await database.fetchval("SELECT count(*) FROM customers"), "customers:")
    print("\n".join(report))


async def test_paging_a_filtered_subset_of_100k_neither_repeats_nor_omits(
    ops: httpx.AsyncClient, database: asyncpg.Pool, seeded: int
) -> None:
    expected_ids = {
        str(r["id"])
        for r in await database.fetch(
            "SELECT id FROM customers WHERE customer_type = 'PRIVATE_COMPANY' AND status = 'INACTIVE' AND created_at < $1",
            SEED_END,
        )
    }
    count = await database.fetchval(
        "SELECT count(*) FROM customers WHERE customer_type = 'PRIVATE_COMPANY' AND status = 'INACTIVE' AND created_at < $1",
        SEED_END,
    )
    assert count == len(expected_ids) > 1000
    subset = {"customerType": "PRIVATE_COMPANY", "status": "INACTIVE", "createdBefore": SEED_END.isoformat()}
    for direction in ("DESC", "ASC"):
        started = time.perf_counter()
        nodes, sizes = await list_all(
            ops, first=100, filter=subset, sort={"field": "CREATED_AT", "direction": direction}
        )
        elapsed = time.perf_counter() - started
        ids = [n["id"] for n in nodes]
        assert len(ids) == len(set(ids)) == count
        assert set(ids) == expected_ids
        keys = [(datetime.fromisoformat(n["createdAt"]), n["id"]) for n in nodes]
        assert keys == sorted(keys, reverse=direction == "DESC")
        print(f"\n{direction}: {count} customers in {len(sizes)} pages over HTTP in {elapsed:.2f}s")
