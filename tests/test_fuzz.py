"""Property-based robustness: whatever arrives at the webhook or GraphQL endpoints, the API answers
with a 2xx/4xx (never a 500), every GraphQL error is one of ours or GraphQL's own (never a masked
internal error), and an invalid request changes nothing."""

from __future__ import annotations

import base64
import json
import re
import string
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

from db.data_keys import DataKeyStore
from dev.stack import DevStack
from domain.customer import CustomerType
from integrations.sumsub.webhooks import WEBHOOK_DIGEST_ALGORITHMS, webhook_digest
from kit.settings import Settings
from kit.temporal import connect
from tests.support.customers import assert_no_workflow, customer_id_of
from tests.support.graphql import register

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECRET = "dev-sumsub-webhook-secret"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
webhook_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["applicantReviewed", "applicantPending", "applicantOnHold", "somethingNew", ""])
        | st.integers(),
        "externalUserId": st.uuids().map(str) | st.text(max_size=40) | st.none(),
        "applicantId": st.text(alphabet=string.hexdigits, max_size=24),
        "correlationId": st.text(max_size=20),
        "createdAtMs": st.text(max_size=25) | st.integers(),
        "reviewResult": st.dictionaries(st.sampled_from(["reviewAnswer", "reviewRejectType"]), json_values, max_size=2),
    },
)


@pytest.fixture(scope="module")
def counts(stack: DevStack) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, timeout=30)


@FUZZ
@given(
    body=st.binary(max_size=512),
    alg=st.sampled_from([None, *WEBHOOK_DIGEST_ALGORITHMS, "HMAC_MD5_HEX"]),
    sign=st.booleans(),
)
def test_arbitrary_bytes_at_the_webhook_never_cause_a_server_error(
    counts: httpx.Client, body: bytes, alg: str | None, sign: bool
) -> None:
    headers = {}
    if alg is not None:
        headers["X-Payload-Digest-Alg"] = alg
    if sign:
        headers["X-Payload-Digest"] = webhook_digest(
            body, SECRET, alg if alg in WEBHOOK_DIGEST_ALGORITHMS else "HMAC_SHA256_HEX"
        )
    response = counts.post("/webhooks/sumsub", content=body, headers=headers)
    assert response.status_code in (200, 400, 401), response.text
    if not sign or alg == "HMAC_MD5_HEX":
        assert response.status_code == 401


@FUZZ
@given(payload=webhook_like)
def test_signed_webhook_shaped_bodies_are_accepted_or_refused_cleanly(counts: httpx.Client, payload: dict) -> None:
    body = json.dumps(payload).encode()
    response = counts.post("/webhooks/sumsub", content=body, headers={"X-Payload-Digest": webhook_digest(body, SECRET)})
    valid = (
        isinstance(payload.get("type"), str)
        and payload["type"]
        and isinstance(payload.get("externalUserId"), str)
        and payload["externalUserId"]
        and b"\\u0000" not in body
    )  # NUL cannot be stored: refused
    assert response.status_code == (200 if valid else 400), response.text


@pytest.fixture(scope="module")
def ops_sync(stack: DevStack) -> httpx.Client:
    """Ops, who may call every operation, so fuzzed variables reach every resolver (the portal is refused
    listing and lookup by email before they run)."""
    token = httpx.post(
        f"{stack.keycloak_url}/realms/customers/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": "ops", "client_secret": "ops-dev-secret"},
    ).json()["access_token"]
    return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


REGISTER = "mutation($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id } } }"

# The codes of our typed errors (api/errors.py); INTERNAL_SERVER_ERROR, the base class's, is not one.
KNOWN_CODES = {"BAD_USER_INPUT", "NOT_FOUND", "CONFLICT", "FORBIDDEN", "SERVICE_UNAVAILABLE"}
MASKED = "Unexpected error."  # what MaskErrors puts in place of an unexpected exception's message


def assert_no_internal_error(body: dict[str, Any]) -> None:
    """Every error is one we meant: a typed error of ours (its code), or GraphQL's own refusal of the
    document or its values (syntax, validation, coercion), which carries no code. GraphQL's own refusals
    come before execution (no `path`), except an argument's value, coerced as its field runs; any other
    error at a `path` without one of our codes is an exception that escaped a resolver unmasked."""
    for error in body.get("errors", []):
        assert error["message"] != MASKED, body
        code = (error.get("extensions") or {}).get("code")
        if code is not None:
            assert code in KNOWN_CODES, body
        elif "path" in error:
            assert error["message"].startswith("Argument '"), f"a resolver failed without one of our codes: {body}"


@pytest.fixture(scope="module")
async def temporal(stack: DevStack, data_keys: DataKeyStore) -> Client:
    return await connect(Settings(temporal_address=stack.temporal_address), data_keys=data_keys)


@pytest.fixture(scope="module")
async def derived_id(stack: DevStack, portal: httpx.AsyncClient) -> Any:
    """The customer id a registration of an email would get (and so its workflow's id): checked once
    against a real registration, so the "nothing stored under it" checks below look in the right place."""
    registered = await register(portal, " Fuzz.Control@Example.com", "INDIVIDUAL")
    assert registered["id"] == customer_id_of(stack, " Fuzz.Control@Example.com")
    return lambda email: customer_id_of(stack, email)


# Registrations with exactly what makes each invalid: the email, the type (with a valid email, so a
# registration that went ahead would be stored under the email's id), or the telegram handle.
valid_types = st.sampled_from([t.value for t in CustomerType])
junk_types = st.text(max_size=30).filter(lambda t: t not in set(CustomerType)) | st.integers() | st.none()
any_telegram = st.text(max_size=40) | st.none() | st.integers()
invalid_telegram = st.integers() | st.text(min_size=1, max_size=40).filter(
    lambda t: t.strip() != "" and not re.fullmatch(r"@?[A-Za-z][A-Za-z0-9_]{4,31}", t.strip())
)
invalid_registrations = st.one_of(
    st.tuples(
        st.text(max_size=40).filter(lambda e: "@" not in e) | st.emails().map(lambda e: "@" + e),
        valid_types | junk_types,
        any_telegram,
    ),
    st.tuples(st.emails(), junk_types, any_telegram),
    st.tuples(st.emails(), valid_types, invalid_telegram),
)


@FUZZ
@given(registration=invalid_registrations)
async def test_invalid_registrations_are_graphql_errors_and_store_nothing(
    portal: httpx.AsyncClient,
    database: asyncpg.Pool,
    temporal: Client,
    derived_id: Any,
    registration: tuple[str, object, object],
) -> None:
    email, customer_type, telegram = registration
    response = await portal.post(
        "/graphql",
        json={
            "query": REGISTER,
            "variables": {"input": {"email": email, "customerType": customer_type, "telegramHandle": telegram}},
        },
    )
    assert response.status_code == 200, response.text  # refused by GraphQL or by us, as a GraphQL error
    body = response.json()
    assert "errors" in body and body.get("data") in (None, {"customerRegister": None}), body
    assert_no_internal_error(body)
    # Nothing under the id this email would have had: no customers row, no workflow.
    customer_id = derived_id(email)
    assert not await database.fetchval("SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1)", customer_id), email
    await assert_no_workflow(temporal, customer_id)


def _cursor(created_at: str, customer_id: str) -> str:
    """Shaped like the API's cursors (base64 of `created_at|id`), with any parts."""
    return base64.urlsafe_b64encode(f"{created_at}|{customer_id}".encode()).decode()


# Real operations of the schema (what ops may call), so fuzzed variables reach the resolvers and the
# service behind them, not only the parser.
OPERATIONS = [
    "query($id: ID!) { customer(id: $id) { id status kyc { status } onboarding { stage } depositAccount { id } } }",
    "query($first: Int, $after: String, $filter: CustomerFilter, $sort: CustomerSort) {"
    " customers(first: $first, after: $after, filter: $filter, sort: $sort) {"
    " edges { cursor node { id createdAt } } pageInfo { hasNextPage endCursor } } }",
    "query($email: String!) { customerByEmail(email: $email) { id email } }",
    "{ me { id } }",
    "query($first: Int!) { undeliverableWebhooks(first: $first) { id } }",
    "mutation($input: CustomerKycLinkCreateInput!) { customerKycLinkCreate(input: $input) { url } }",
]
instants = st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()) | st.text(max_size=30)
enum_or_junk = st.sampled_from(
    [
        "ACTIVE",
        "INACTIVE",
        "SUSPENDED",
        "BANK",
        "INDIVIDUAL",
        "APPROVED",
        "PENDING",
        "AWAITING_KYC",
        "ONBOARDED",
        "CREATED_AT",
        "ASC",
        "DESC",
    ]
) | st.text(max_size=12)
variable_values = (
    json_values
    | st.uuids().map(str)
    | st.integers(min_value=-(2**31), max_value=2**31 - 1)
    | st.builds(_cursor, instants, st.uuids().map(str) | st.text(max_size=40))
    | st.fixed_dictionaries(
        {},
        optional={
            "status": enum_or_junk,
            "customerType": enum_or_junk,
            "kycStatus": enum_or_junk,
            "stage": enum_or_junk,
            "createdAfter": instants,
            "createdBefore": instants,
            "field": enum_or_junk,
            "direction": enum_or_junk,
        },
    )
    | st.fixed_dictionaries({"customerId": st.uuids().map(str) | st.text(max_size=40)})
)
operation_variables = st.dictionaries(
    st.sampled_from(["id", "first", "after", "filter", "sort", "email", "input"]), variable_values, max_size=5
)


@FUZZ
@given(document=st.text(max_size=200), variables=json_values)
def test_arbitrary_graphql_documents_never_cause_a_server_error(
    ops_sync: httpx.Client, document: str, variables: object
) -> None:
    response = ops_sync.post("/graphql", json={"query": document, "variables": variables})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert_no_internal_error(response.json())


@FUZZ
@given(document=st.sampled_from(OPERATIONS), variables=operation_variables)
def test_our_operations_with_arbitrary_variables_fail_only_with_our_errors(
    ops_sync: httpx.Client, document: str, variables: dict[str, Any]
) -> None:
    response = ops_sync.post("/graphql", json={"query": document, "variables": variables})
    assert response.status_code == 200, response.text
    assert_no_internal_error(response.json())


@FUZZ
@given(customer_id=st.text(max_size=50))
def test_reading_any_customer_id_is_null_or_a_bad_input_error(ops_sync: httpx.Client, customer_id: str) -> None:
    response = ops_sync.post(
        "/graphql", json={"query": "query($id: ID!) { customer(id: $id) { id } }", "variables": {"id": customer_id}}
    )
    assert response.status_code == 200
    body = response.json()
    if "errors" in body:
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    else:
        assert body["data"]["customer"] is None
