"""Property-based robustness: whatever arrives at the webhook or GraphQL endpoints, the API answers
with a 2xx/4xx (never a 500) and an invalid request changes nothing."""

from __future__ import annotations

import json
import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dev.stack import DevStack
from integrations.sumsub.webhooks import WEBHOOK_DIGEST_ALGORITHMS, webhook_digest

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
        "type": st.sampled_from(["applicantReviewed", "applicantPending", "applicantOnHold", "somethingNew", ""]) | st.integers(),
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
@given(body=st.binary(max_size=512), alg=st.sampled_from([None, *WEBHOOK_DIGEST_ALGORITHMS, "HMAC_MD5_HEX"]),
       sign=st.booleans())
def test_arbitrary_bytes_at_the_webhook_never_cause_a_server_error(counts: httpx.Client, body: bytes, alg: str | None,
                                                                    sign: bool) -> None:
    headers = {}
    if alg is not None:
        headers["X-Payload-Digest-Alg"] = alg
    if sign:
        headers["X-Payload-Digest"] = webhook_digest(body, SECRET, alg if alg in WEBHOOK_DIGEST_ALGORITHMS else "HMAC_SHA256_HEX")
    response = counts.post("/webhooks/sumsub", content=body, headers=headers)
    assert response.status_code in (200, 400, 401), response.text
    if not sign or alg == "HMAC_MD5_HEX":
        assert response.status_code == 401


@FUZZ
@given(payload=webhook_like)
def test_signed_webhook_shaped_bodies_are_accepted_or_refused_cleanly(counts: httpx.Client, payload: dict) -> None:
    body = json.dumps(payload).encode()
    response = counts.post("/webhooks/sumsub", content=body, headers={"X-Payload-Digest": webhook_digest(body, SECRET)})
    valid = isinstance(payload.get("type"), str) and payload["type"] and isinstance(payload.get("externalUserId"), str) \
        and payload["externalUserId"] and b"\\u0000" not in body  # NUL cannot be stored: refused
    assert response.status_code == (200 if valid else 400), response.text


@pytest.fixture(scope="module")
def portal_sync(stack: DevStack) -> httpx.Client:
    token = httpx.post(
        f"{stack.keycloak_url}/realms/customers/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": "portal", "client_secret": "portal-dev-secret"},
    ).json()["access_token"]
    return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


REGISTER = "mutation($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id } } }"


@FUZZ
@given(
    email=st.text(max_size=40) | st.emails().map(lambda e: "@" + e),
    customer_type=st.text(max_size=30) | st.integers() | st.none(),
    telegram=st.text(max_size=40) | st.none() | st.integers(),
)
def test_invalid_registrations_are_graphql_errors_and_store_nothing(
    portal_sync: httpx.Client, email: object, customer_type: object, telegram: object
) -> None:
    response = portal_sync.post("/graphql", json={"query": REGISTER, "variables": {
        "input": {"email": email, "customerType": customer_type, "telegramHandle": telegram}}})
    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert body.get("data") in (None, {"customerRegister": None}) or "errors" in body
    assert "errors" in body
    assert all("Unexpected error" not in e["message"] for e in body["errors"]), body


@FUZZ
@given(document=st.text(max_size=200), variables=json_values)
def test_arbitrary_graphql_documents_never_cause_a_server_error(portal_sync: httpx.Client, document: str,
                                                                 variables: object) -> None:
    response = portal_sync.post("/graphql", json={"query": document, "variables": variables})
    assert response.status_code in (200, 400), response.text


@FUZZ
@given(customer_id=st.text(max_size=50))
def test_reading_any_customer_id_is_null_or_a_bad_input_error(portal_sync: httpx.Client, customer_id: str) -> None:
    response = portal_sync.post("/graphql", json={"query": "query($id: ID!) { customer(id: $id) { id } }",
                                                  "variables": {"id": customer_id}})
    assert response.status_code == 200
    body = response.json()
    if "errors" in body:
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    else:
        assert body["data"]["customer"] is None
