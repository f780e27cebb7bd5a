"""Access-token verification (`api.auth.TokenVerifier`) and what the API does with its verdict.

Real tokens come from the Keycloak emulator; tokens with bad claims are minted with our own key and
served by a small JWKS app of our own (in process), so that the claim (not the signature) is what fails.
Over HTTP, every bad token is a 401; a valid token without the role a field needs is FORBIDDEN, and a
customer's token naming another customer is FORBIDDEN too (the role checks run on the schema directly).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import auth
from api.auth import AuthenticationError, Principal, TokenVerifier
from api.schema import Context, schema
from api.service import CustomerPage
from dev.emulators.keycloak import DEFAULT_REALM_FILE, create_app
from dev.stack import DevStack
from domain.customer import CustomerType
from domain.state import CustomerState, Registration
from kit.settings import Settings
from tests.helpers import free_port, running_app
from tests.support.emulators import client_token

AUDIENCE = str(Settings.model_fields["api_audience"].default)
REALM = str(Settings.model_fields["keycloak_realm"].default)
JWKS_PATH = f"/realms/{REALM}/protocol/openid-connect/certs"
EXPORT = json.loads(DEFAULT_REALM_FILE.read_text(encoding="utf-8"))
PORTAL_SUBJECT = next(u["id"] for u in EXPORT["users"] if u.get("serviceAccountClientId") == "portal")
DROP = object()  # a claim override meaning "leave this claim out"


def new_key() -> RSAKey:
    return RSAKey.generate_key(
        2048, parameters={"kid": secrets.token_urlsafe(16), "alg": "RS256", "use": "sig"}, private=True
    )


SIGNING_KEY, ROTATED_KEY = new_key(), new_key()
ROGUE_KEY = RSAKey.generate_key(2048, parameters={"kid": secrets.token_urlsafe(16)}, private=True)  # any RS alg


# --- token crafting ---------------------------------------------------------------------------------


def b64(data: bytes | str | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def sign(claims: dict[str, Any], key: RSAKey, **header: Any) -> str:
    return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": key.kid, **header}, claims, key)


def unsigned(claims: dict[str, Any], **header: Any) -> str:
    """`alg: none`: a header, the claims and an empty signature."""
    return f"{b64({'alg': 'none', 'typ': 'JWT', **header})}.{b64(claims)}."


def hs256(claims: dict[str, Any], secret: bytes, **header: Any) -> str:
    """HMAC-signed, e.g. with the issuer's public key as the secret (the classic algorithm confusion)."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', **header})}.{b64(claims)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def tampered(token: str, **changes: Any) -> str:
    """The same header and signature over a payload with some claims changed."""
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload)) | changes
    return f"{header}.{b64(claims)}.{signature}"


def claims_of(token: str) -> dict[str, Any]:
    return dict(json.loads(unb64(token.split(".")[1])))


def token_claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    """What Keycloak puts in a portal service account's access token; `DROP` removes a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "8d1c7a0e-portal-service-account",
        "typ": "Bearer",
        "azp": "portal",
        "realm_access": {"roles": ["portal"]},
    }
    claims |= overrides
    return {name: value for name, value in claims.items() if value is not DROP}


# --- an issuer of our own: a JWKS endpoint whose keys and health the test controls ------------------


@dataclass
class Issuer:
    url: str = ""
    served: list[RSAKey] = field(default_factory=lambda: [SIGNING_KEY])
    requests: int = 0
    failing: bool = False

    def app(self) -> Starlette:
        async def certs(request: Request) -> Response:
            self.requests += 1
            if self.failing:
                return JSONResponse({"error": "unknown_error"}, status_code=503)
            return JSONResponse({"keys": [key.as_dict(private=False) for key in self.served]})

        return Starlette(routes=[Route(JWKS_PATH, certs)])

    def token(self, key: RSAKey = SIGNING_KEY, **overrides: Any) -> str:
        return sign(token_claims(self.url, **overrides), key)


class Clock:
    """Stands in for the `time` module of `api.auth`, so the JWKS refetch interval can be stepped over."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def issuer() -> Issuer:
    return Issuer(url=f"http://127.0.0.1:9/realms/{REALM}")  # served in process: see `verifier`


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(auth, "time", fake)
    yield fake


@pytest.fixture
async def verifier(issuer: Issuer) -> AsyncIterator[TokenVerifier]:
    """A verifier whose HTTP client calls our issuer's app directly (no socket, no server)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app())) as http:
        yield TokenVerifier(issuer=issuer.url, audience=AUDIENCE, http=http)


# --- the Keycloak emulator: real tokens -------------------------------------------------------------


@dataclass(frozen=True)
class Keycloak:
    issuer: str
    public_key: RSAKey  # the realm's signing key, as its JWKS publishes it

    async def token(self, client_id: str, secret: str) -> str:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{self.issuer}/protocol/openid-connect/token",
                data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            )
        response.raise_for_status()
        return str(response.json()["access_token"])


@pytest.fixture(scope="module")
async def keycloak(starts_servers: None) -> AsyncIterator[Keycloak]:
    port = free_port()
    async with running_app(
        create_app(realm_export=DEFAULT_REALM_FILE, public_url=f"http://127.0.0.1:{port}"), port
    ) as url:
        issuer = f"{url}/realms/{REALM}"
        async with httpx.AsyncClient() as http:
            (jwk,) = (await http.get(f"{issuer}/protocol/openid-connect/certs")).json()["keys"]
        yield Keycloak(issuer=issuer, public_key=RSAKey.import_key(jwk))


@pytest.fixture
def keycloak_verifier(keycloak: Keycloak, http: httpx.AsyncClient) -> TokenVerifier:
    return TokenVerifier(issuer=keycloak.issuer, audience=AUDIENCE, http=http)


def forgeries(real: str, public_key: RSAKey) -> dict[str, str]:
    """Tokens built from a real one that a verifier must refuse, by what is wrong with them."""
    claims = claims_of(real)
    kid = public_key.kid
    return {
        "signed by another key under the realm's kid": sign(claims, ROGUE_KEY, kid=kid),
        "signed by a key not in the JWKS": sign(claims, ROGUE_KEY),
        "alg none": unsigned(claims, kid=kid),
        "alg none without kid": unsigned(claims),
        "HS256 keyed with the realm's public key": hs256(claims, public_key.as_pem(private=False), kid=kid),
        "HS256 keyed with a shared secret": hs256(claims, b"portal-dev-secret", kid=kid),
        "RS512 instead of RS256": jwt.encode({"alg": "RS512", "kid": kid}, claims, ROGUE_KEY, algorithms=["RS512"]),
        "tampered: roles raised to ops": tampered(real, realm_access={"roles": ["ops", "portal"]}),
        "tampered: another subject": tampered(real, sub="someone-else"),
        "tampered: expiry extended": tampered(real, exp=claims["exp"] + 86_400),
        "signature stripped": real.rsplit(".", 1)[0] + ".",
        "garbage": "garbage",
        "three empty segments": "..",
        "not base64": "%%%.%%%.%%%",
        "header is a JSON array": f"{b64('[1]')}.{b64(claims)}.sig",
        "header is JSON null": f"{b64('null')}.{b64(claims)}.sig",
        "payload is not JSON": f"{real.split('.')[0]}.{b64('not json')}.{real.split('.')[2]}",
        "five segments (a JWE)": "a.b.c.d.e",
    }


async def test_a_portal_token_from_keycloak_is_accepted(keycloak: Keycloak, keycloak_verifier: TokenVerifier) -> None:
    principal = await keycloak_verifier.verify(await keycloak.token("portal", "portal-dev-secret"))
    assert principal == Principal(subject=PORTAL_SUBJECT, client_id="portal", roles=frozenset({"portal"}))
    assert principal.has_role("portal", "ops") and not principal.has_role("ops")

    ops = await keycloak_verifier.verify(await keycloak.token("ops", "ops-dev-secret"))
    assert ops.client_id == "ops" and ops.roles == {"ops"}


async def test_two_compliance_identities_carry_the_role_under_different_subjects(
    keycloak: Keycloak, keycloak_verifier: TokenVerifier
) -> None:
    """Four eyes needs two officers: the realm's `compliance` client and the dev-only `compliance-checker`."""
    maker = await keycloak_verifier.verify(await keycloak.token("compliance", "compliance-dev-secret"))
    checker = await keycloak_verifier.verify(
        await keycloak.token("compliance-checker", "compliance-checker-dev-secret")
    )
    assert maker.roles == {"compliance"} and checker.roles == {"compliance"}
    assert maker.subject != checker.subject
    ops = await keycloak_verifier.verify(await keycloak.token("ops", "ops-dev-secret"))
    assert not ops.has_role("compliance")


async def test_a_keycloak_token_for_another_client_is_rejected(
    keycloak: Keycloak, keycloak_verifier: TokenVerifier
) -> None:
    worker = await keycloak.token("customer-lifecycle", "customer-lifecycle-dev-secret")
    assert "aud" not in claims_of(worker) and claims_of(worker)["azp"] == "customer-lifecycle"
    with pytest.raises(AuthenticationError, match="not meant for this API"):
        await keycloak_verifier.verify(worker)


async def test_forged_and_malformed_tokens_are_rejected(keycloak: Keycloak, keycloak_verifier: TokenVerifier) -> None:
    real = await keycloak.token("portal", "portal-dev-secret")
    await keycloak_verifier.verify(real)  # the keys are cached: forgeries fail on their own faults
    for name, token in forgeries(real, keycloak.public_key).items():
        with pytest.raises(AuthenticationError):
            await keycloak_verifier.verify(token)
            pytest.fail(f"accepted a forged token: {name}")


async def test_a_jku_header_does_not_make_the_verifier_trust_another_key_set(
    keycloak: Keycloak, keycloak_verifier: TokenVerifier
) -> None:
    rogue = Issuer(served=[ROGUE_KEY])
    claims = claims_of(await keycloak.token("portal", "portal-dev-secret"))
    async with running_app(rogue.app()) as rogue_url:
        token = sign(claims, ROGUE_KEY, jku=f"{rogue_url}{JWKS_PATH}")
        with pytest.raises(AuthenticationError):
            await keycloak_verifier.verify(token)
    assert rogue.requests == 0


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": int(time.time()) - 3600}, id="expired an hour ago"),
        pytest.param({"exp": DROP}, id="no exp"),
        pytest.param({"exp": "9999999999"}, id="exp not a number"),
        pytest.param({"nbf": int(time.time()) + 3600}, id="not valid for an hour"),
        pytest.param({"iss": "http://127.0.0.1:1/realms/customers"}, id="another issuer"),
        pytest.param({"iss": DROP}, id="no issuer"),
        pytest.param({"aud": "account", "azp": "portal"}, id="another audience, azp not ours"),
        pytest.param({"aud": DROP, "azp": "portal"}, id="no audience, azp not ours"),
        pytest.param({"aud": ["account", "broker"]}, id="audience list without ours"),
        pytest.param({"sub": DROP}, id="no subject"),
    ],
)
async def test_tokens_with_bad_claims_are_rejected(
    issuer: Issuer, verifier: TokenVerifier, overrides: dict[str, Any]
) -> None:
    await verifier.verify(issuer.token())  # the same key and issuer with good claims pass
    with pytest.raises(AuthenticationError):
        await verifier.verify(issuer.token(**overrides))


async def test_the_issuer_must_match_exactly(issuer: Issuer, verifier: TokenVerifier) -> None:
    for near_miss in (issuer.url + "/", issuer.url.upper(), issuer.url.replace("127.0.0.1", "localhost")):
        with pytest.raises(AuthenticationError):
            await verifier.verify(issuer.token(iss=near_miss))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"aud": ["account", AUDIENCE]}, id="our audience among others"),
        pytest.param({"aud": DROP, "azp": AUDIENCE}, id="no audience, azp is ours"),
        pytest.param({"realm_access": DROP}, id="no roles"),
    ],
)
async def test_tokens_meant_for_us_are_accepted(
    issuer: Issuer, verifier: TokenVerifier, overrides: dict[str, Any]
) -> None:
    principal = await verifier.verify(issuer.token(**overrides))
    assert principal.subject == "8d1c7a0e-portal-service-account"


async def test_clock_skew_within_the_leeway_is_tolerated(issuer: Issuer, verifier: TokenVerifier) -> None:
    assert auth.LEEWAY_SECONDS == 30
    now = int(time.time())
    assert (await verifier.verify(issuer.token(exp=now - 10))).roles == {"portal"}
    assert (await verifier.verify(issuer.token(nbf=now + 10, iat=now + 10))).roles == {"portal"}
    with pytest.raises(AuthenticationError, match="expired"):
        await verifier.verify(issuer.token(exp=now - 60))


async def test_a_verified_token_is_remembered_only_until_it_expires(
    issuer: Issuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    token = issuer.token(exp=int(now) + 5)
    assert (await verifier.verify(token)).roles == {"portal"}
    assert (await verifier.verify(token)).roles == {"portal"}  # from the cache
    monkeypatch.setattr(auth.time, "time", lambda: now + 5 + auth.LEEWAY_SECONDS + 1)
    with pytest.raises(AuthenticationError, match="expired"):
        await verifier.verify(token)


# --- the JWKS cache ---------------------------------------------------------------------------------


async def test_the_first_burst_of_requests_fetches_the_keys_once(
    issuer: Issuer, verifier: TokenVerifier, clock: Clock
) -> None:
    principals = await asyncio.gather(*(verifier.verify(issuer.token()) for _ in range(20)))
    assert {p.client_id for p in principals} == {"portal"}
    assert issuer.requests == 1


async def test_a_rotated_in_key_is_fetched_once_and_then_accepted(
    issuer: Issuer, verifier: TokenVerifier, clock: Clock
) -> None:
    await verifier.verify(issuer.token())
    assert issuer.requests == 1
    issuer.served = [SIGNING_KEY, ROTATED_KEY]  # Keycloak publishes old and new key while rotating

    clock.advance(auth.JWKS_REFRESH_MIN_INTERVAL)
    assert (await verifier.verify(issuer.token(ROTATED_KEY))).client_id == "portal"
    assert issuer.requests == 2
    await verifier.verify(issuer.token(ROTATED_KEY))
    await verifier.verify(issuer.token(SIGNING_KEY))
    assert issuer.requests == 2


async def test_unknown_kids_refetch_no_more_often_than_the_minimum_interval(
    issuer: Issuer, verifier: TokenVerifier, clock: Clock
) -> None:
    await verifier.verify(issuer.token())

    async def unknown_kid() -> None:
        with pytest.raises(AuthenticationError):
            await verifier.verify(sign(token_claims(issuer.url), ROGUE_KEY, kid=secrets.token_urlsafe(8)))

    for _ in range(10):
        await unknown_kid()
    await asyncio.gather(*(unknown_kid() for _ in range(10)))
    assert issuer.requests == 1  # fetched moments ago: no refetch

    clock.advance(auth.JWKS_REFRESH_MIN_INTERVAL)
    await asyncio.gather(*(unknown_kid() for _ in range(10)))
    assert issuer.requests == 2  # one refetch for the whole burst
    clock.advance(auth.JWKS_REFRESH_MIN_INTERVAL / 2)
    await unknown_kid()
    assert issuer.requests == 2


async def test_an_unreachable_jwks_is_not_hammered_and_known_keys_keep_working(
    issuer: Issuer, verifier: TokenVerifier, clock: Clock
) -> None:
    await verifier.verify(issuer.token())
    issuer.failing = True
    clock.advance(auth.JWKS_REFRESH_MIN_INTERVAL)
    for _ in range(10):
        with pytest.raises(AuthenticationError):
            await verifier.verify(issuer.token(ROTATED_KEY))
    assert issuer.requests == 2  # one failed refetch, then the interval applies to failures too
    assert (await verifier.verify(issuer.token())).client_id == "portal"


async def test_no_keys_at_all_is_an_unavailable_issuer_not_a_bad_token(issuer: Issuer, verifier: TokenVerifier) -> None:
    """Keycloak down before any key was fetched: the token cannot be judged, so the endpoints answer 503
    (retry) rather than 401 (which tells a client to throw its token away)."""
    issuer.failing = True
    with pytest.raises(auth.IssuerUnavailable, match="signing keys"):
        await verifier.verify(issuer.token())

    async def guarded(request: Request) -> Response:
        caller = await auth.authorize(request, verifier, "events", what="the feed")
        return caller if isinstance(caller, Response) else Response("ok")

    app = Starlette(routes=[Route("/guarded", guarded)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app") as http:
        answer = await http.get("/guarded", headers={"Authorization": f"Bearer {issuer.token()}"})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
    issuer.failing = False


# --- over HTTP: the API's answers -------------------------------------------------------------------

TYPENAME = {"query": "{ __typename }"}


async def test_the_api_answers_401_to_every_bad_token(stack: DevStack) -> None:
    real = await client_token(stack, "portal", "portal-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        (jwk,) = (await http.get(f"{stack.keycloak_url}{JWKS_PATH}")).json()["keys"]
        bad = forgeries(real, RSAKey.import_key(jwk))
        bad["a token without the API's audience"] = await client_token(
            stack, "customer-lifecycle", "customer-lifecycle-dev-secret"
        )

        ok = await http.post("/graphql", json=TYPENAME, headers={"Authorization": f"Bearer {real}"})
        assert ok.status_code == 200 and ok.json() == {"data": {"__typename": "Query"}}
        for name, token in bad.items():
            response = await http.post("/graphql", json=TYPENAME, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, (name, response.text)
        for header in ("", "Bearer", f"Basic {real}", real):
            response = await http.post("/graphql", json=TYPENAME, headers={"Authorization": header})
            assert response.status_code == 401, (header[:20], response.text)


# --- roles: checked per field, before any resolver runs ---------------------------------------------


class _Customers:
    """Stands in for `CustomerService`; records what resolvers asked of it and knows the customers given."""

    def __init__(self, *known: CustomerState) -> None:
        self.calls: list[str] = []
        self.known = {state.customer_id: state for state in known}

    async def get(self, customer_id: str) -> CustomerState | None:
        self.calls.append(f"get {customer_id}")
        return self.known.get(customer_id)

    async def register(self, **kwargs: Any) -> None:
        self.calls.append("register")
        raise AssertionError("a forbidden caller reached the resolver")

    async def page(self, *args: Any, **kwargs: Any) -> CustomerPage:
        self.calls.append("page")
        return CustomerPage(customers=[], has_next_page=False)

    async def get_by_email(self, email: str) -> None:
        self.calls.append("get_by_email")
        return None

    async def events(self, customer_id: str) -> list[Any]:
        self.calls.append(f"events {customer_id}")
        return []

    async def create_kyc_link(self, customer_id: str) -> str:
        self.calls.append(f"link {customer_id}")
        return f"https://sumsub.example/websdk/{customer_id}"


CUSTOMER_ID = "00000000-0000-8000-8000-000000000000"
OTHER_ID = "11111111-1111-8111-8111-111111111111"
KEYCLOAK_USER = "4d2f3c1a-0000-4000-8000-00000000c0de"
GET_CUSTOMER = "query Get($id: ID!) { customer(id: $id) { id status } }"
GET_EVENTS = "query Get($id: ID!) { customer(id: $id) { id events { type } } }"
LIST = "{ customers { edges { node { id } } } }"
BY_EMAIL = '{ customerByEmail(email: "x@example.com") { id } }'
ME = "{ me { id } }"
KYC_LINK = "mutation Link($id: ID!) { customerKycLinkCreate(input: {customerId: $id}) { url } }"
REGISTER = (
    """mutation { customerRegister(input: {email: "x@example.com", customerType: INDIVIDUAL}) { customer { id } } }"""
)


def _state(customer_id: str = CUSTOMER_ID, keycloak_user_id: str | None = KEYCLOAK_USER) -> CustomerState:
    now = datetime.now(UTC)
    registration = Registration(customer_id=customer_id, email="x@example.com", customer_type=CustomerType.INDIVIDUAL)
    return CustomerState(registration=registration, keycloak_user_id=keycloak_user_id, created_at=now, updated_at=now)


def _context(
    customers: _Customers, *roles: str, subject: str = "x", customer_id: str | None = None, client_id: str = "y"
) -> Context:
    services: Any = SimpleNamespace(customers=customers)  # only what the resolvers under test touch
    principal = Principal(subject=subject, client_id=client_id, roles=frozenset(roles), customer_id=customer_id)
    return Context(services=services, principal=principal)


def _customer_context(customers: _Customers, **overrides: Any) -> Context:
    """A customer's own token for CUSTOMER_ID, as the portal's login issues it."""
    claims: dict[str, Any] = {"subject": KEYCLOAK_USER, "customer_id": CUSTOMER_ID, "client_id": "customer-portal"}
    return _context(customers, "customer", **(claims | overrides))


def _codes(result: Any) -> list[Any]:
    return [e.extensions for e in result.errors or []]


@pytest.mark.parametrize("roles", [(), ("offline_access", "uma_authorization"), ("default-roles-customers",)], ids=str)
async def test_a_caller_without_a_role_for_the_field_is_forbidden_before_any_resolver_runs(
    roles: tuple[str, ...],
) -> None:
    customers = _Customers(_state())
    # A customer_id claim without the customer role (say, a mapper on another client) makes nobody a customer.
    context = _context(customers, *roles, subject=KEYCLOAK_USER, customer_id=CUSTOMER_ID)
    read = await schema.execute(GET_CUSTOMER, variable_values={"id": CUSTOMER_ID}, context_value=context)
    assert read.data == {"customer": None}
    assert read.errors is not None
    assert [(e.message, e.extensions) for e in read.errors] == [("forbidden", {"code": "FORBIDDEN"})]
    write = await schema.execute(REGISTER, context_value=context)
    assert write.data is None and _codes(write) == [{"code": "FORBIDDEN"}]
    link = await schema.execute(KYC_LINK, variable_values={"id": CUSTOMER_ID}, context_value=context)
    assert link.data is None and _codes(link) == [{"code": "FORBIDDEN"}]
    assert (await schema.execute(ME, context_value=context)).data == {"me": None}
    assert customers.calls == []


@pytest.mark.parametrize("role", ["portal", "ops"])
async def test_portal_and_ops_reach_the_resolver(role: str) -> None:
    customers = _Customers()
    result = await schema.execute(
        GET_CUSTOMER, variable_values={"id": CUSTOMER_ID}, context_value=_context(customers, role)
    )
    assert result.errors is None and result.data == {"customer": None}
    assert customers.calls == [f"get {CUSTOMER_ID}"]


@pytest.mark.parametrize(
    "document",
    [LIST, BY_EMAIL, GET_EVENTS, "{ undeliverableWebhooks { id } }"],
    ids=["list", "email", "events", "inbox"],
)
@pytest.mark.parametrize("roles", [("portal",), ("customer",)], ids=str)
async def test_portal_and_customers_may_not_list_look_up_by_email_or_read_the_audit_trail(
    roles: tuple[str, ...], document: str
) -> None:
    customers = _Customers(_state())
    context = _context(customers, *roles, subject=KEYCLOAK_USER, customer_id=CUSTOMER_ID)
    result = await schema.execute(document, variable_values={"id": CUSTOMER_ID}, context_value=context)
    assert _codes(result) == [{"code": "FORBIDDEN"}]
    assert result.data is None or next(iter(result.data.values())) is None  # no data beside the refusal
    assert not [call for call in customers.calls if not call.startswith("get ")]  # no list, lookup or events


async def test_ops_reaches_the_list_the_email_lookup_and_the_audit_trail() -> None:
    customers = _Customers(_state())
    for document in (LIST, BY_EMAIL, GET_EVENTS):
        result = await schema.execute(
            document, variable_values={"id": CUSTOMER_ID}, context_value=_context(customers, "ops")
        )
        assert result.errors is None, result.errors
    assert customers.calls == ["page", "get_by_email", f"get {CUSTOMER_ID}", f"events {CUSTOMER_ID}"]


async def test_a_customer_reads_and_links_its_own_customer_only() -> None:
    customers = _Customers(_state(), _state(OTHER_ID, keycloak_user_id="someone-else"))
    mine = _customer_context(customers)

    own = await schema.execute(GET_CUSTOMER, variable_values={"id": CUSTOMER_ID.upper()}, context_value=mine)
    assert own.errors is None and own.data == {"customer": {"id": CUSTOMER_ID, "status": "INACTIVE"}}
    me = await schema.execute(ME, context_value=mine)
    assert me.errors is None and me.data == {"me": {"id": CUSTOMER_ID}}
    link = await schema.execute(KYC_LINK, variable_values={"id": CUSTOMER_ID}, context_value=mine)
    assert link.errors is None and link.data == {
        "customerKycLinkCreate": {"url": f"https://sumsub.example/websdk/{CUSTOMER_ID}"}
    }
    assert customers.calls == [f"get {CUSTOMER_ID}"] * 3 + [f"link {CUSTOMER_ID}"]

    # Another customer's id, real or guessed, is refused before anything is read: the answer cannot tell
    # whether it exists.
    customers.calls.clear()
    for other in (OTHER_ID, "22222222-2222-8222-8222-222222222222"):
        for document in (GET_CUSTOMER, KYC_LINK):
            refused = await schema.execute(document, variable_values={"id": other}, context_value=mine)
            assert _codes(refused) == [{"code": "FORBIDDEN"}]
            assert [e.message for e in refused.errors or []] == [
                "a customer may see and act on their own customer only"
            ]
            assert refused.data in ({"customer": None}, None)
    assert customers.calls == []
    register = await schema.execute(REGISTER, context_value=mine)
    assert _codes(register) == [{"code": "FORBIDDEN"}]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"customer_id": None}, id="no customer_id claim"),
        pytest.param({"customer_id": "not-a-uuid"}, id="claim not a uuid"),
        pytest.param({"subject": "another-keycloak-user"}, id="a Keycloak user other than the one provisioned"),
        pytest.param(
            {"customer_id": OTHER_ID, "subject": "someone-else"}, id="claim of a customer not yet provisioned"
        ),
    ],
)
async def test_a_customer_token_that_does_not_match_the_provisioned_user_sees_nothing(
    overrides: dict[str, Any],
) -> None:
    customers = _Customers(_state(), _state(OTHER_ID, keycloak_user_id=None))
    context = _customer_context(customers, **overrides)
    target = overrides.get("customer_id") if overrides.get("customer_id") not in (None, "not-a-uuid") else CUSTOMER_ID
    assert (await schema.execute(ME, context_value=context)).data == {"me": None}
    for document in (GET_CUSTOMER, KYC_LINK):
        refused = await schema.execute(document, variable_values={"id": target}, context_value=context)
        assert _codes(refused) == [{"code": "FORBIDDEN"}], overrides
    assert not [call for call in customers.calls if call.startswith("link")]


def test_only_a_customer_token_speaks_for_a_customer() -> None:
    def own(roles: set[str], customer_id: str | None) -> str | None:
        return Principal(subject="u", client_id="c", roles=frozenset(roles), customer_id=customer_id).own_customer_id

    lettered = "a3f5c0de-0000-8000-8000-0000000000ab"
    assert own({"customer"}, lettered.upper()) == lettered  # the canonical form ids are compared in
    assert own({"portal"}, lettered) is None and own({"ops", "default-roles-customers"}, lettered) is None
    assert own({"customer"}, "x") is None and own({"customer"}, None) is None


async def test_a_customer_id_claim_that_is_not_a_string_is_ignored(issuer: Issuer, verifier: TokenVerifier) -> None:
    principal = await verifier.verify(issuer.token(realm_access={"roles": ["customer"]}, customer_id=[CUSTOMER_ID]))
    assert principal.customer_id is None and principal.own_customer_id is None
    principal = await verifier.verify(issuer.token(realm_access={"roles": ["customer"]}, customer_id=CUSTOMER_ID))
    assert principal.own_customer_id == CUSTOMER_ID
