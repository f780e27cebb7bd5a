"""Customers' own logins at the Keycloak emulator (spec/keycloak.md, "Customers' own logins"): a password
set through the admin API, the password grant of the dev-only client, and the portal's authorization code
flow with PKCE through the login page; each refusal with Keycloak's status and body, in Keycloak's order.

Every test gets a fresh emulator seeded from the realm export plus the dev-only clients; users are made
with python-keycloak as the worker makes them (enabled, `customer_id` attribute, realm role `customer`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakPutError

import dev.emulators.keycloak as emulator_module
from api.auth import TokenVerifier
from dev.emulators.keycloak import DEFAULT_REALM_FILE, DEV_CLIENTS_FILE, create_app
from dev.emulators.keycloak_logins import check_password, hash_password
from kit.settings import Settings
from tests.helpers import free_port, running_app
from tests.support.emulators import (
    DEV_LOGIN_CLIENT,
    PORTAL_CALLBACK,
    PORTAL_LOGIN_CLIENT,
    auth_endpoint,
    browser_token,
    exchange_code,
    form_action,
    keycloak_admin_client,
    password_login,
    pkce_pair,
    redirect_params,
    running_keycloak_emulator,
    start_browser_login,
    token_endpoint,
)

REALM = str(Settings.model_fields["keycloak_realm"].default)
API_AUDIENCE = str(Settings.model_fields["api_audience"].default)
CUSTOMER_ID = "5f0c7c1e-2b8a-8d4e-9a61-0c2b7e4d1100"
EMAIL = "jane.doe@example.com"
PASSWORD = "correct horse battery staple"
EXPORT = json.loads(DEFAULT_REALM_FILE.read_text(encoding="utf-8"))
DEV_CLIENTS = json.loads(DEV_CLIENTS_FILE.read_text(encoding="utf-8"))


@pytest.fixture
async def keycloak(starts_servers: None) -> AsyncIterator[str]:
    async with running_keycloak_emulator() as base_url:
        yield base_url


@pytest.fixture
async def admin(keycloak: str) -> AsyncIterator[KeycloakAdmin]:
    async with keycloak_admin_client(keycloak, "customer-lifecycle", "customer-lifecycle-dev-secret") as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def _customer(admin: KeycloakAdmin, email: str = EMAIL, *, password: str | None = PASSWORD) -> str:
    """A customer's user as the worker provisions it, with a password set through the admin API."""
    user_id = str(
        await admin.a_create_user(
            {"username": email, "email": email, "enabled": True, "attributes": {"customer_id": [CUSTOMER_ID]}}
        )
    )
    await admin.a_assign_realm_roles(user_id, [await admin.a_get_realm_role("customer")])
    if password is not None:
        await admin.a_set_user_password(user_id, password, temporary=False)
    return user_id


async def _claims(http: httpx.AsyncClient, keycloak: str, token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set((await http.get(f"{keycloak}/realms/{REALM}/protocol/openid-connect/certs")).json())
    return dict(jwt.decode(token, keys, algorithms=["RS256"]).claims)


def _oauth(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    return response.status_code, response.json()


class _Clock:
    """Stands in for the emulator module's `time`, so a code can outlive its 60 seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Clock]:
    fake = _Clock()
    monkeypatch.setattr(emulator_module, "time", fake)
    yield fake


# --- passwords ----------------------------------------------------------------------------------------


def test_a_password_is_stored_as_a_salted_scrypt_hash() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and PASSWORD not in first and first.startswith("scrypt$16384$8$1$")
    assert check_password(PASSWORD, first) and check_password(PASSWORD, second)
    assert not check_password(PASSWORD + " ", first)
    assert not check_password(None, first) and not check_password(PASSWORD, None)


async def test_reset_password_sets_a_password_the_user_signs_in_with(keycloak: str, admin: KeycloakAdmin) -> None:
    user_id = await _customer(admin, password=None)
    no_password = await password_login(keycloak, EMAIL, PASSWORD)
    assert _oauth(no_password) == (401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})

    await admin.a_set_user_password(user_id, PASSWORD, temporary=False)
    assert (await password_login(keycloak, EMAIL, PASSWORD)).status_code == 200
    user = await admin.a_get_user(user_id)
    assert "credentials" not in user and PASSWORD not in json.dumps(user)

    await admin.a_set_user_password(user_id, "a new one", temporary=False)  # replaces the old password
    assert (await password_login(keycloak, EMAIL, PASSWORD)).status_code == 401
    assert (await password_login(keycloak, EMAIL, "a new one")).status_code == 200


async def test_a_temporary_password_asks_for_a_new_one_before_any_token(keycloak: str, admin: KeycloakAdmin) -> None:
    user_id = await _customer(admin, password=None)
    await admin.a_set_user_password(user_id, PASSWORD, temporary=True)
    assert (await admin.a_get_user(user_id))["requiredActions"] == ["UPDATE_PASSWORD"]
    refused = await password_login(keycloak, EMAIL, PASSWORD)
    assert _oauth(refused) == (400, {"error": "invalid_grant", "error_description": "Account is not fully set up"})

    await admin.a_set_user_password(user_id, PASSWORD, temporary=False)  # a permanent one lifts it
    assert (await admin.a_get_user(user_id))["requiredActions"] == []
    assert (await password_login(keycloak, EMAIL, PASSWORD)).status_code == 200


async def test_reset_password_refusals(keycloak: str, admin: KeycloakAdmin, http: httpx.AsyncClient) -> None:
    user_id = await _customer(admin, password=None)
    response = await http.post(
        token_endpoint(keycloak),
        data={
            "grant_type": "client_credentials",
            "client_id": "customer-lifecycle",
            "client_secret": "customer-lifecycle-dev-secret",
        },
    )
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    url = f"{keycloak}/admin/realms/{REALM}/users/{user_id}/reset-password"
    cases: list[tuple[Any, int, dict[str, str]]] = [
        (None, 400, {"error": "No password provided"}),
        ({"type": "password", "temporary": False}, 400, {"error": "No password provided"}),
        ({"type": "password", "value": "   "}, 400, {"error": "Empty password not allowed"}),
        (
            {"type": "password", "value": "x", "colour": "red"},
            400,
            {"error": "unknown_error", "error_description": "Cannot parse the JSON"},
        ),
    ]
    for body, status, expected in cases:
        refused = await http.put(url, content=b"" if body is None else json.dumps(body), headers=headers)
        assert (refused.status_code, refused.json()) == (status, expected), body

    with pytest.raises(KeycloakPutError) as unknown:
        await admin.a_set_user_password("no-such-user", PASSWORD, temporary=False)
    assert (unknown.value.response_code, json.loads(unknown.value.response_body)) == (404, {"error": "User not found"})

    async with keycloak_admin_client(keycloak, "portal", "portal-dev-secret") as portal:
        with pytest.raises(KeycloakPutError) as forbidden:
            await portal.a_set_user_password(user_id, PASSWORD, temporary=False)
    assert forbidden.value.response_code == 403


# --- the password grant -----------------------------------------------------------------------------


async def test_the_password_grant_issues_a_customer_token_the_api_accepts(
    keycloak: str, admin: KeycloakAdmin, http: httpx.AsyncClient
) -> None:
    user_id = await _customer(admin)
    response = await password_login(keycloak, EMAIL.upper(), PASSWORD)  # usernames are case-insensitive
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 300, "openid profile email")
    assert "refresh_token" not in body and response.headers["cache-control"] == "no-store"

    claims = await _claims(http, keycloak, body["access_token"])
    assert claims["iss"] == f"{keycloak}/realms/{REALM}"
    assert (claims["sub"], claims["azp"], claims["aud"]) == (user_id, DEV_LOGIN_CLIENT, API_AUDIENCE)
    assert claims["realm_access"] == {"roles": ["customer"]}
    assert claims["customer_id"] == CUSTOMER_ID
    assert claims["exp"] - claims["iat"] == 300
    assert (claims["preferred_username"], claims["email"]) == (EMAIL, EMAIL)
    assert "client_id" not in claims  # that claim is for service accounts

    id_token = await _claims(http, keycloak, body["id_token"])
    assert (id_token["typ"], id_token["aud"], id_token["sub"]) == ("ID", DEV_LOGIN_CLIENT, user_id)

    principal = await TokenVerifier(issuer=f"{keycloak}/realms/{REALM}", audience=API_AUDIENCE, http=http).verify(
        body["access_token"]
    )
    assert (principal.subject, principal.customer_id, principal.roles) == (user_id, CUSTOMER_ID, {"customer"})
    assert principal.own_customer_id == CUSTOMER_ID

    without_openid = await password_login(keycloak, EMAIL, PASSWORD, scope="")
    assert without_openid.json()["scope"] == "profile email" and "id_token" not in without_openid.json()


async def test_password_grant_refusals(keycloak: str, admin: KeycloakAdmin, http: httpx.AsyncClient) -> None:
    user_id = await _customer(admin)
    disabled_id = await _customer(admin, "disabled@example.com")
    await admin.a_update_user(disabled_id, {"enabled": False})
    invalid = {"error": "invalid_grant", "error_description": "Invalid user credentials"}

    assert _oauth(await password_login(keycloak, EMAIL, "wrong")) == (401, invalid)
    assert _oauth(await password_login(keycloak, "nobody@example.com", PASSWORD)) == (400, invalid)
    assert _oauth(await password_login(keycloak, "service-account-portal", "x")) == (400, invalid)
    disabled = await password_login(keycloak, "disabled@example.com", PASSWORD)
    assert _oauth(disabled) == (400, {"error": "invalid_grant", "error_description": "Account disabled"})

    async def grant(**form: str) -> tuple[int, dict[str, Any]]:
        return _oauth(await http.post(token_endpoint(keycloak), data={"grant_type": "password", **form}))

    assert await grant(client_id=DEV_LOGIN_CLIENT, password=PASSWORD) == (
        401,
        {"error": "invalid_request", "error_description": "Missing parameter: username"},
    )
    assert await grant(client_id=DEV_LOGIN_CLIENT, username=EMAIL) == (401, invalid)
    assert await grant(client_id=DEV_LOGIN_CLIENT, username=EMAIL, password=PASSWORD, scope="openid banking") == (
        400,
        {"error": "invalid_scope", "error_description": "Invalid scopes: openid banking"},
    )
    # The production realm's clients have no direct access grants: not the portal's browser login, not
    # the portal's server, whatever the credentials.
    no_direct_grants = {
        "error": "unauthorized_client",
        "error_description": "Client not allowed for direct access grants",
    }
    assert await grant(client_id=PORTAL_LOGIN_CLIENT, username=EMAIL, password=PASSWORD) == (400, no_direct_grants)
    assert await grant(client_id="portal", client_secret="portal-dev-secret", username=EMAIL, password=PASSWORD) == (
        400,
        no_direct_grants,
    )
    assert await grant(client_id="portal", client_secret="wrong", username=EMAIL, password=PASSWORD) == (
        401,
        {"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"},
    )
    assert (await grant(client_id="nobody", username=EMAIL, password=PASSWORD))[1]["error"] == "invalid_client"
    assert user_id  # the user exists: each refusal above is about what was sent


# --- the authorization code flow with PKCE ------------------------------------------------------------


async def test_the_portal_login_with_pkce_issues_a_customer_token(
    keycloak: str, admin: KeycloakAdmin, http: httpx.AsyncClient
) -> None:
    user_id = await _customer(admin)
    async with httpx.AsyncClient() as browser:
        login = await start_browser_login(browser, keycloak, state="s-42", nonce="n-42")
        assert 'id="kc-form-login"' in login.page.text and "AUTH_SESSION_ID" in browser.cookies
        redirected = await login.submit(EMAIL, PASSWORD)
        assert redirected.headers["location"].startswith(f"{PORTAL_CALLBACK}?")
        answer = redirect_params(redirected)
        assert (answer["state"], answer["iss"]) == ("s-42", f"{keycloak}/realms/{REALM}")

        # The portal's server exchanges the code (no browser cookies needed).
        response = await exchange_code(http, keycloak, answer["code"], login.verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    claims = await _claims(http, keycloak, body["access_token"])
    assert (claims["sub"], claims["azp"], claims["aud"]) == (user_id, PORTAL_LOGIN_CLIENT, API_AUDIENCE)
    assert (claims["realm_access"], claims["customer_id"]) == ({"roles": ["customer"]}, CUSTOMER_ID)
    assert claims["exp"] - claims["iat"] == 300 and claims["sid"] == answer["session_state"]
    id_token = await _claims(http, keycloak, body["id_token"])
    assert (id_token["aud"], id_token["nonce"], id_token["customer_id"]) == (PORTAL_LOGIN_CLIENT, "n-42", CUSTOMER_ID)

    again = await exchange_code(http, keycloak, answer["code"], login.verifier)  # a code is good once
    assert _oauth(again) == (400, {"error": "invalid_grant", "error_description": "Code not valid"})
    assert await browser_token(keycloak, EMAIL, PASSWORD)  # the helper the API tests use


async def test_the_login_page_refuses_wrong_credentials_and_disabled_users_without_a_code(
    keycloak: str, admin: KeycloakAdmin
) -> None:
    await _customer(admin)
    disabled_id = await _customer(admin, "disabled@example.com")
    await admin.a_update_user(disabled_id, {"enabled": False})
    async with httpx.AsyncClient() as browser:
        login = await start_browser_login(browser, keycloak)
        for username, password, message in (
            (EMAIL, "wrong", "Invalid username or password."),
            ("nobody@example.com", PASSWORD, "Invalid username or password."),
            ("", PASSWORD, "Invalid username or password."),
            ("disabled@example.com", PASSWORD, "Account is disabled, contact your administrator."),
        ):
            again = await login.submit(username, password)
            assert again.status_code == 200 and 'id="kc-form-login"' in again.text, again.text
            assert f'<span id="input-error">{message}</span>' in again.text, username
            assert "location" not in again.headers
        # The same form still signs the right password in.
        assert "code" in redirect_params(await login.submit(EMAIL, PASSWORD))

        # Without the browser's cookie, or once used, the form is refused.
        fresh = await start_browser_login(browser, keycloak)
        async with httpx.AsyncClient() as other_browser:
            stolen = await other_browser.post(form_action(fresh.page), data={"username": EMAIL, "password": PASSWORD})
        assert stolen.status_code == 400 and "Cookie not found." in stolen.text
        assert "code" in redirect_params(await fresh.submit(EMAIL, PASSWORD))
        replayed = await fresh.submit(EMAIL, PASSWORD)
        assert replayed.status_code == 400 and "Your login attempt timed out." in replayed.text


async def test_a_temporary_password_does_not_finish_a_browser_login(keycloak: str, admin: KeycloakAdmin) -> None:
    user_id = await _customer(admin, password=None)
    await admin.a_set_user_password(user_id, PASSWORD, temporary=True)
    async with httpx.AsyncClient() as browser:
        login = await start_browser_login(browser, keycloak)
        stopped = await login.submit(EMAIL, PASSWORD)
    assert stopped.status_code == 200 and "location" not in stopped.headers
    assert "You need to change your password to activate your account." in stopped.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client_id": None}, "Missing parameters: client_id"),
        ({"client_id": "nobody"}, "Client not found."),
        ({"redirect_uri": "http://evil.example/callback"}, "Invalid parameter: redirect_uri"),
        ({"redirect_uri": "http://localhost:3000.evil.example/"}, "Invalid parameter: redirect_uri"),
        ({"redirect_uri": None}, "Invalid parameter: redirect_uri"),  # required for an OpenID request
        ({"client_id": DEV_LOGIN_CLIENT}, "Invalid parameter: redirect_uri"),  # it has none
    ],
)
async def test_an_authorization_request_no_redirect_uri_can_answer_is_an_error_page(
    keycloak: str, http: httpx.AsyncClient, change: dict[str, str | None], message: str
) -> None:
    _, challenge = pkce_pair()
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": PORTAL_LOGIN_CLIENT,
        "redirect_uri": PORTAL_CALLBACK,
        "scope": "openid",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    } | change
    page = await http.get(auth_endpoint(keycloak), params={k: v for k, v in params.items() if v is not None})
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert f'<p id="kc-error-message" class="instruction">{message}</p>' in page.text
    assert "set-cookie" not in page.headers


@pytest.mark.parametrize(
    ("change", "error", "description"),
    [
        ({"response_type": None}, "invalid_request", "Missing parameter: response_type"),
        ({"response_type": "banana"}, "unsupported_response_type", None),
        (
            {"response_type": "token"},
            "unauthorized_client",
            "Client is not allowed to initiate browser login with given response_type. "
            "Implicit flow is disabled for the client.",
        ),
        ({"scope": "openid banking"}, "invalid_scope", "Invalid scopes: openid banking"),
        ({"code_challenge_method": None}, "invalid_request", "Missing parameter: code_challenge_method"),
        (
            {"code_challenge_method": "plain"},
            "invalid_request",
            "Invalid parameter: code challenge method is not matching the configured one",
        ),
        ({"code_challenge": None}, "invalid_request", "Missing parameter: code_challenge"),
        ({"code_challenge": "too-short"}, "invalid_request", "Invalid parameter: code_challenge"),
    ],
)
async def test_a_refused_authorization_request_is_redirected_back_with_the_error(
    keycloak: str, http: httpx.AsyncClient, change: dict[str, str | None], error: str, description: str | None
) -> None:
    _, challenge = pkce_pair()
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": PORTAL_LOGIN_CLIENT,
        "redirect_uri": PORTAL_CALLBACK,
        "scope": "openid",
        "state": "s-7",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    } | change
    refused = await http.get(auth_endpoint(keycloak), params={k: v for k, v in params.items() if v is not None})
    answer = redirect_params(refused)
    assert refused.headers["location"].startswith(f"{PORTAL_CALLBACK}?")
    expected = {"error": error, "state": "s-7", "iss": f"{keycloak}/realms/{REALM}"}
    assert answer == expected | ({"error_description": description} if description else {})


async def test_code_exchange_refusals(
    keycloak: str, admin: KeycloakAdmin, http: httpx.AsyncClient, clock: _Clock
) -> None:
    user_id = await _customer(admin)

    async def code() -> tuple[str, str]:
        async with httpx.AsyncClient() as browser:
            login = await start_browser_login(browser, keycloak)
            return redirect_params(await login.submit(EMAIL, PASSWORD))["code"], login.verifier

    async def exchange(**form: str) -> tuple[int, dict[str, Any]]:
        return _oauth(await http.post(token_endpoint(keycloak), data={"grant_type": "authorization_code", **form}))

    def grant_error(description: str) -> tuple[int, dict[str, str]]:
        return 400, {"error": "invalid_grant", "error_description": description}

    portal = {"client_id": PORTAL_LOGIN_CLIENT, "redirect_uri": PORTAL_CALLBACK}
    assert await exchange(**portal) == (
        400,
        {"error": "invalid_request", "error_description": "Missing parameter: code"},
    )
    assert await exchange(**portal, code="made-up", code_verifier="x" * 43) == grant_error("Code not valid")

    cases: list[tuple[dict[str, str], str]] = [
        ({"code_verifier": ""}, "PKCE verification failed: Invalid code verifier"),
        ({"code_verifier": "x" * 42}, "PKCE verification failed: Invalid code verifier"),
        ({"code_verifier": pkce_pair()[0]}, "PKCE verification failed: Code mismatch"),
        ({"redirect_uri": "http://localhost:3000/elsewhere"}, "Incorrect redirect_uri"),
    ]
    for change, description in cases:
        issued, verifier = await code()
        assert await exchange(**(portal | {"code": issued, "code_verifier": verifier} | change)) == grant_error(
            description
        ), change
        # A failed exchange uses the code up.
        assert await exchange(**portal, code=issued, code_verifier=verifier) == grant_error("Code not valid")

    issued, _ = await code()
    assert await exchange(**portal, code=issued) == grant_error("PKCE code verifier not specified")

    issued, verifier = await code()
    another_client = await exchange(
        client_id="temporal-ui",
        client_secret="temporal-ui-dev-secret",
        redirect_uri=PORTAL_CALLBACK,
        code=issued,
        code_verifier=verifier,
    )
    assert another_client == grant_error("Auth error: Found different client_id in clientSession")

    issued, verifier = await code()
    await admin.a_update_user(user_id, {"enabled": False})
    assert await exchange(**portal, code=issued, code_verifier=verifier) == grant_error("User disabled")
    await admin.a_update_user(user_id, {"enabled": True})

    issued, verifier = await code()
    clock.offset = 61  # the realm's accessCodeLifespan is 60 s
    assert await exchange(**portal, code=issued, code_verifier=verifier) == grant_error("Code is expired")


# --- the realm export and the dev-only clients ---------------------------------------------------------


def test_no_client_of_the_production_realm_allows_the_password_grant() -> None:
    """The password grant hands the customer's password to the client and bypasses the login page;
    only the dev-only client, which the real Keycloak never imports, has it."""
    assert [c["clientId"] for c in EXPORT["clients"] if c.get("directAccessGrantsEnabled")] == []
    portal_login = next(c for c in EXPORT["clients"] if c["clientId"] == PORTAL_LOGIN_CLIENT)
    assert portal_login["attributes"]["pkce.code.challenge.method"] == "S256" and portal_login["publicClient"]
    assert (EXPORT["accessTokenLifespan"], EXPORT["accessCodeLifespan"]) == (300, 60)

    assert DEV_CLIENTS["realm"] == EXPORT["realm"] and set(DEV_CLIENTS) == {"realm", "clients", "users"}
    dev_login, checker = DEV_CLIENTS["clients"]
    # The second compliance officer (four eyes in dev): a service account, no login of any kind.
    assert checker["clientId"] == "compliance-checker" and checker["serviceAccountsEnabled"]
    assert not checker["directAccessGrantsEnabled"] and not checker["standardFlowEnabled"]
    accounts = [u["serviceAccountClientId"] for u in DEV_CLIENTS["users"] if "serviceAccountClientId" in u]
    assert accounts == ["compliance-checker"]
    # Officers as people: dev users with the compliance role, signing in through the production realm's console.
    officers = [u for u in DEV_CLIENTS["users"] if "serviceAccountClientId" not in u]
    assert [(u["username"], u["realmRoles"]) for u in officers] == [
        ("officer-anna", ["compliance"]),
        ("officer-ben", ["compliance"]),
    ]
    console = next(c for c in EXPORT["clients"] if c["clientId"] == "compliance-console")
    assert console["publicClient"] and console["standardFlowEnabled"] and not console["serviceAccountsEnabled"]
    assert console["attributes"]["pkce.code.challenge.method"] == "S256"
    assert (dev_login["clientId"], dev_login["publicClient"], dev_login["directAccessGrantsEnabled"]) == (
        DEV_LOGIN_CLIENT,
        True,
        True,
    )
    assert not dev_login["standardFlowEnabled"] and not dev_login.get("serviceAccountsEnabled")
    # The same token as the portal's login: the customer_id claim and the API audience.
    assert {m["protocolMapper"]: m["config"] for m in dev_login["protocolMappers"]} == {
        m["protocolMapper"]: m["config"] for m in portal_login["protocolMappers"]
    }


async def test_discovery_names_the_login_endpoints_and_grants(keycloak: str, http: httpx.AsyncClient) -> None:
    discovery = (await http.get(f"{keycloak}/realms/{REALM}/.well-known/openid-configuration")).json()
    assert discovery["authorization_endpoint"] == auth_endpoint(keycloak)
    assert discovery["token_endpoint"] == token_endpoint(keycloak)
    assert {"authorization_code", "password", "client_credentials"} <= set(discovery["grant_types_supported"])
    assert "S256" in discovery["code_challenge_methods_supported"] and "code" in discovery["response_types_supported"]
    assert {"openid", "profile", "email"} <= set(discovery["scopes_supported"])


async def test_without_the_dev_clients_the_emulator_serves_the_production_realm_alone(starts_servers: None) -> None:
    port = free_port()
    app = create_app(realm_export=DEFAULT_REALM_FILE, public_url=f"http://127.0.0.1:{port}", dev_clients=None)
    async with running_app(app, port) as url:
        refused = await password_login(url, EMAIL, PASSWORD)
    assert _oauth(refused) == (
        401,
        {"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"},
    )
    with pytest.raises(ValueError, match="already in the realm export"):
        create_app(
            realm_export=DEFAULT_REALM_FILE,
            public_url="http://127.0.0.1:1",
            dev_clients={"realm": REALM, "clients": [{"clientId": "portal"}]},
        )
