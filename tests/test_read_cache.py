"""The API answers a repeated `customer(id)` read from memory while the customer's row is unchanged (api/read_cache.py).

- Which documents it may keep, decided from the schema without I/O: one `customer(id)` root field whose every
  selected field is the projection's own data; not `currentStep` (asks the workflow), `profile`, `documents`,
  `events`, `kycDocuments`, fragments, directives, mutations or any other root field.
- On the real stack: the same read asked again is a hit with the same bytes; the moment ops suspend the
  customer (the projection is written before the mutation answers), the next read says SUSPENDED; a missing
  or invalid token is still refused after the answer was kept. That a customer's token never gets an answer
  kept for staff is in tests/test_customer_access.py.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from api.read_cache import Plan, plain_fields, plan_for
from api.schema import schema
from dev.stack import DevStack
from tests.support.graphql import CUSTOMER_FIELDS, finish_onboarding, graphql, register
from tests.test_observability import scrape, value

GRAPHQL_SCHEMA = schema._schema
PLAIN = plain_fields(GRAPHQL_SCHEMA)
GET = f"query Get($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_FIELDS} depositAccount {{ id status }} }} }}"
SUSPEND = 'mutation($id: ID!) { customerSuspend(input: {customerId: $id, reason: "read cache test"}) { customer { status } } }'


def test_the_projections_own_fields_are_plain_and_resolvers_are_not() -> None:
    assert {("Customer", "email"), ("Kyc", "status"), ("Onboarding", "stage"), ("DepositAccount", "id")} <= PLAIN
    for resolved in (("Onboarding", "currentStep"), ("Customer", "profile"), ("Customer", "documents")):
        assert resolved not in PLAIN
    assert ("Customer", "events") not in PLAIN and ("Customer", "kycDocuments") not in PLAIN
    assert ("Query", "customer") not in PLAIN  # the root is the one resolver the cache knows


@pytest.mark.parametrize(
    ("document", "plan"),
    [
        (GET, Plan(id_variable="id", id_literal=None)),
        ('{ customer(id: "abc") { id __typename kyc { upgrade { status } } } }', Plan(None, "abc")),
        ("query($c: ID!) { c: customer(id: $c) { status } }", Plan("c", None)),
    ],
)
def test_a_read_of_the_projection_is_kept(document: str, plan: Plan) -> None:
    assert plan_for(document, GRAPHQL_SCHEMA, PLAIN) == plan


@pytest.mark.parametrize(
    "document",
    [
        "query($id: ID!) { customer(id: $id) { id onboarding { currentStep } } }",  # asks the workflow
        "query($id: ID!) { customer(id: $id) { id profile { provided { firstName } } } }",
        "query($id: ID!) { customer(id: $id) { documents(includeArchived: true) { id } } }",
        "query($id: ID!) { customer(id: $id) { events { type } } }",
        "query($id: ID!) { customer(id: $id) { kycDocuments { id } } }",
        "query($id: ID!) { customer(id: $id) { ...F } } fragment F on Customer { id }",
        "query($id: ID!) { customer(id: $id) { ... on Customer { id } } }",
        "query($id: ID!, $x: Boolean!) { customer(id: $id) { id @include(if: $x) } }",
        "query($id: ID!) { customer(id: $id) @skip(if: false) { id } }",
        "query($id: ID!) { customer(id: $id) { id } me { id } }",
        "{ me { id status } }",
        "{ customers(first: 5) { edges { node { id } } } }",
        'mutation { customerSuspend(input: {customerId: "x", reason: "r"}) { customer { id } } }',
        "query A { me { id } } query B { me { id } }",
        "{ customer(id: 5) { id } }",
        "{ customer(id: ",
    ],
)
def test_anything_else_goes_to_strawberry(document: str) -> None:
    assert plan_for(document, GRAPHQL_SCHEMA, PLAIN) is None


def test_the_plan_names_the_customer_as_the_resolver_would() -> None:
    plan = Plan(id_variable="id", id_literal=None)
    customer = str(uuid.uuid4())
    assert plan.customer_id({"id": customer.upper()}) == customer
    assert plan.customer_id({"id": "not-a-uuid"}) is None and plan.customer_id({}) is None
    assert plan.customer_id({"id": 7}) is None


async def hits(stack: DevStack) -> float:
    return value(await scrape(stack.api_metrics_url), "api_read_cache_total", result="hit")


async def test_a_repeated_read_is_answered_again_until_the_customer_changes(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient
) -> None:
    customer = await register(portal, f"read-cache-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    await finish_onboarding(portal, customer["id"])
    request = {"query": GET, "variables": {"id": customer["id"]}}
    answers = [(await portal.post("/graphql", json=request)).content for _ in range(2)]  # the plan, the answer
    before = await hits(stack)
    again = await portal.post("/graphql", json=request)
    assert await hits(stack) == before + 1
    assert again.status_code == 200 and again.headers["content-type"] == "application/json"
    assert again.content == answers[0] == answers[1]
    assert again.json()["data"]["customer"]["status"] == "ACTIVE"

    suspended = await graphql(ops, SUSPEND, {"id": customer["id"]})
    assert suspended["data"]["customerSuspend"]["customer"]["status"] == "SUSPENDED", suspended
    after = (await portal.post("/graphql", json=request)).json()["data"]["customer"]
    assert after["status"] == "SUSPENDED"  # the row changed: its version too, so nothing kept is answered

    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        assert (await anonymous.post("/graphql", json=request)).status_code == 401
        forged = {"Authorization": "Bearer not.a.token"}
        assert (await anonymous.post("/graphql", json=request, headers=forged)).status_code == 401
        # Two Authorization headers: Strawberry reads the first (forged), so the cache must not answer for the
        # second (the portal's, whose answer it keeps).
        portal_auth = portal.headers["authorization"]
        twice = [("Authorization", "Bearer not.a.token"), ("Authorization", portal_auth)]
        body = json.dumps(request).encode()
        both = await anonymous.post("/graphql", content=body, headers=[("Content-Type", "application/json"), *twice])
        assert both.status_code == 401

    # A body over 4 KB (the same read with padding) is Strawberry's to answer: right, and never a hit.
    padded = {**request, "query": GET + " " * 5000}
    before = await hits(stack)
    for _ in range(3):
        answer = (await portal.post("/graphql", json=padded)).json()["data"]["customer"]
        assert answer["status"] == "SUSPENDED"
    assert await hits(stack) == before
