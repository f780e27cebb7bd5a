"""The Keycloak emulator, driven by the real python-keycloak client so that it stays a faithful stand-in.

Every test gets a fresh emulator seeded from the realm export the real Keycloak imports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from keycloak import KeycloakAdmin
from keycloak.exceptions import (
    KeycloakAuthenticationError,
    KeycloakDeleteError,
    KeycloakGetError,
    KeycloakPostError,
    KeycloakPutError,
)

from dev.emulators.keycloak import DEFAULT_REALM_FILE
from kit.settings import Settings
from tests.helpers import free_port
from tests.support.emulators import DEV_OFFICERS, keycloak_admin_client, running_keycloak_emulator


def _setting_default(name: str) -> str:
    """The realm export must match what the service uses out of the box, so tests use its defaults."""
    return str(Settings.model_fields[name].default)


REALM = _setting_default("keycloak_realm")
CLIENT_ID = _setting_default("keycloak_client_id")
CLIENT_SECRET = _setting_default("keycloak_client_secret")
API_AUDIENCE = _setting_default("api_audience")
REALM_MANAGEMENT_ROLES = {"manage-users", "view-users", "query-users", "view-realm"}
EXPORT = json.loads(DEFAULT_REALM_FILE.read_text(encoding="utf-8"))


@pytest.fixture
async def keycloak(starts_servers: None) -> AsyncIterator[str]:
    """A fresh emulator on a free port; yields its base URL (also its public URL)."""
    async with running_keycloak_emulator() as base_url:
        yield base_url


@pytest.fixture
async def admin(keycloak: str) -> AsyncIterator[KeycloakAdmin]:
    """python-keycloak as the customer-lifecycle service uses it."""
    async with keycloak_admin_client(keycloak, CLIENT_ID, CLIENT_SECRET) as client:
        yield client


@pytest.fixture
async def http(keycloak: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keycloak) as client:
        yield client


def _body(error: KeycloakGetError | KeycloakPostError | KeycloakPutError | KeycloakDeleteError) -> object:
    return json.loads(error.response_body or b"null")


async def _fetch_token(http: httpx.AsyncClient, client_id: str, secret: str) -> str:
    response = await http.post(
        f"/realms/{REALM}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _decode_with_published_keys(http: httpx.AsyncClient, token: str) -> jwt.Token:
    discovery = (await http.get(f"/realms/{REALM}/.well-known/openid-configuration")).json()
    keys = KeySet.import_key_set((await http.get(discovery["jwks_uri"])).json())
    return jwt.decode(token, keys, algorithms=["RS256"])


def _service_account(client_id: str) -> dict[str, object]:
    return next(user for user in EXPORT["users"] if user.get("serviceAccountClientId") == client_id)


async def test_create_returns_201_with_location_and_the_client_reads_the_id_from_it(
    keycloak: str, admin: KeycloakAdmin, http: httpx.AsyncClient
) -> None:
    started = time.time() * 1000
    user_id = await admin.a_create_user(
        {
            "username": "Alice@Example.com",
            "email": "Alice@Example.com",
            "enabled": True,
            "firstName": "Alice",
            "attributes": {"customer_id": ["cus_alice"]},
            "requiredActions": ["VERIFY_EMAIL", "NOT_AN_ACTION"],
        }
    )

    user = await admin.a_get_user(user_id)
    assert user["id"] == user_id
    assert user["username"] == "alice@example.com"
    assert user["email"] == "alice@example.com"
    assert (user["firstName"], user["enabled"], user["emailVerified"]) == ("Alice", True, False)
    assert user["attributes"] == {"customer_id": ["cus_alice"]}
    assert user["requiredActions"] == ["VERIFY_EMAIL"]
    assert started <= user["createdTimestamp"] <= time.time() * 1000

    token = await _fetch_token(http, CLIENT_ID, CLIENT_SECRET)
    response = await http.post(
        f"/admin/realms/{REALM}/users", json={"username": "bob"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201
    assert response.content == b""
    users_url = re.escape(f"{keycloak}/admin/realms/{REALM}/users/")
    location = re.fullmatch(rf"{users_url}([0-9a-f-]{{36}})", response.headers["Location"])
    assert location is not None
    assert (await admin.a_get_user(location[1]))["enabled"] is False  # Keycloak's default without "enabled"


async def test_duplicates_and_a_missing_username_are_refused_with_keycloak_bodies(admin: KeycloakAdmin) -> None:
    first_id = await admin.a_create_user({"username": "bob@example.com", "email": "bob@example.com"})

    with pytest.raises(KeycloakPostError) as same_username:
        await admin.a_create_user({"username": "BOB@example.com"})
    assert same_username.value.response_code == 409
    assert _body(same_username.value) == {"errorMessage": "User exists with same username"}

    with pytest.raises(KeycloakPostError) as same_email:
        await admin.a_create_user({"username": "robert", "email": "Bob@Example.com"})
    assert same_email.value.response_code == 409
    assert _body(same_email.value) == {"errorMessage": "User exists with same email"}

    with pytest.raises(KeycloakPostError) as missing:
        await admin.a_create_user({"email": "nobody@example.com"})
    assert missing.value.response_code == 400
    assert _body(missing.value) == {"errorMessage": "User name is missing"}

    assert await admin.a_create_user({"username": "Bob@Example.com"}, exist_ok=True) == first_id


async def test_search_by_field_exact_q_and_pages(admin: KeycloakAdmin) -> None:
    alice = await admin.a_create_user(
        {"username": "alice@example.com", "email": "alice@example.com", "attributes": {"customer_id": ["cus_alice"]}}
    )
    alicia = await admin.a_create_user(
        {"username": "alicia@example.com", "email": "alicia@example.com", "attributes": {"customer_id": ["cus_alicia"]}}
    )

    async def ids(query: dict[str, object]) -> set[str]:
        return {user["id"] for user in await admin.a_get_users(query)}

    assert await ids({"username": "ali"}) == {alice, alicia}
    assert await ids({"username": "ali", "exact": True}) == set()
    assert await ids({"email": "ALICE@example.com", "exact": True}) == {alice}
    assert await ids({"q": "customer_id:cus_alicia"}) == {alicia}
    assert await ids({"q": "customer_id:cus_ali"}) == {alice, alicia}
    assert await ids({"q": "customer_id:cus_ali", "exact": True}) == set()
    assert await ids({"q": "customer_id:cus_alice customer_id_typo:x"}) == set()
    assert await ids({"first": 1, "max": 1}) == {alicia}
    assert await admin.a_get_user_id("ALICE@example.com") == alice
    # Service-account users are not counted; the dev compliance officers (people) are.
    assert await admin.a_users_count() == 2 + len(DEV_OFFICERS)


async def test_only_attributes_declared_in_the_user_profile_are_kept(admin: KeycloakAdmin) -> None:
    user_id = await admin.a_create_user(
        {"username": "carol", "attributes": {"customer_id": ["cus_carol"], "nickname": ["caz"]}}
    )
    assert (await admin.a_get_user(user_id))["attributes"] == {"customer_id": ["cus_carol"]}

    await admin.a_update_user(user_id, {"attributes": {"nickname": ["c"]}})
    assert "attributes" not in await admin.a_get_user(user_id)


async def test_update_is_partial_and_a_sent_collection_replaces_the_stored_one(admin: KeycloakAdmin) -> None:
    user_id = await admin.a_create_user(
        {
            "username": "dave",
            "email": "dave@example.com",
            "firstName": "Dave",
            "enabled": True,
            "attributes": {"customer_id": ["cus_dave"]},
            "requiredActions": ["VERIFY_EMAIL", "UPDATE_PASSWORD"],
        }
    )
    before = await admin.a_get_user(user_id)

    await admin.a_update_user(user_id, {"enabled": False})
    assert await admin.a_get_user(user_id) == before | {"enabled": False}

    await admin.a_update_user(
        user_id, {"requiredActions": ["UPDATE_PASSWORD"], "attributes": {"customer_id": ["cus_dave_2"]}}
    )
    after = await admin.a_get_user(user_id)
    assert after["requiredActions"] == ["UPDATE_PASSWORD"]
    assert after["attributes"] == {"customer_id": ["cus_dave_2"]}
    assert (after["email"], after["firstName"]) == ("dave@example.com", "Dave")

    with pytest.raises(KeycloakPutError) as unknown_field:
        await admin.a_update_user(user_id, {"nickname": "d"})
    assert unknown_field.value.response_code == 400
    assert _body(unknown_field.value) == {"error": "unknown_error", "error_description": "Cannot parse the JSON"}

    await admin.a_create_user({"username": "erin", "email": "erin@example.com"})
    with pytest.raises(KeycloakPutError) as taken:
        await admin.a_update_user(user_id, {"email": "ERIN@example.com"})
    assert taken.value.response_code == 409
    assert _body(taken.value) == {"errorMessage": "User exists with same email"}


async def test_a_deleted_user_is_not_found(admin: KeycloakAdmin) -> None:
    user_id = await admin.a_create_user({"username": "frank"})
    await admin.a_delete_user(user_id)

    with pytest.raises(KeycloakGetError) as missing:
        await admin.a_get_user(user_id)
    assert missing.value.response_code == 404
    assert _body(missing.value) == {"error": "User not found"}
    with pytest.raises(KeycloakDeleteError) as again:
        await admin.a_delete_user(user_id)
    assert again.value.response_code == 404


async def test_execute_actions_email_is_recorded_and_refused_for_disabled_or_emailless_users(
    admin: KeycloakAdmin, http: httpx.AsyncClient
) -> None:
    user_id = await admin.a_create_user({"username": "gina@example.com", "email": "gina@example.com", "enabled": True})
    await admin.a_send_update_account(
        user_id,
        ["VERIFY_EMAIL", "UPDATE_PASSWORD"],
        client_id="customer-portal",
        lifespan=3600,
        redirect_uri="http://localhost:3000/welcome",
    )

    async def sent() -> list[dict[str, object]]:
        return list((await http.get("/_emulator/sent-emails")).json())

    [email] = await sent()
    assert {key: value for key, value in email.items() if key != "sent_at"} == {
        "user_id": user_id,
        "email": "gina@example.com",
        "actions": ["VERIFY_EMAIL", "UPDATE_PASSWORD"],
        "client_id": "customer-portal",
        "redirect_uri": "http://localhost:3000/welcome",
        "lifespan": 3600,
    }

    with pytest.raises(KeycloakPutError) as bad_redirect:
        await admin.a_send_update_account(
            user_id, ["VERIFY_EMAIL"], client_id="customer-portal", redirect_uri="https://evil.example/"
        )
    assert _body(bad_redirect.value) == {"errorMessage": "Invalid redirect uri."}

    await admin.a_update_user(user_id, {"enabled": False})
    with pytest.raises(KeycloakPutError) as disabled:
        await admin.a_send_update_account(user_id, ["VERIFY_EMAIL"])
    assert disabled.value.response_code == 400
    assert _body(disabled.value) == {"errorMessage": "User is disabled"}

    no_email = await admin.a_create_user({"username": "hank", "enabled": True})
    with pytest.raises(KeycloakPutError) as missing_email:
        await admin.a_send_update_account(no_email, ["VERIFY_EMAIL"])
    assert _body(missing_email.value) == {"errorMessage": "User email missing"}

    assert len(await sent()) == 1


async def test_assigned_realm_roles_show_in_role_mappings(admin: KeycloakAdmin) -> None:
    user_id = await admin.a_create_user({"username": "ivy"})
    role = await admin.a_get_realm_role("customer")
    assert (role["name"], role["clientRole"], role["composite"]) == ("customer", False, False)

    await admin.a_assign_realm_roles(user_id, [role])
    assert [mapped["name"] for mapped in await admin.a_get_realm_roles_of_user(user_id)] == ["customer"]

    with pytest.raises(KeycloakPostError) as wrong_id:
        await admin.a_assign_realm_roles(user_id, [{"id": "not-its-id", "name": "ops"}])
    assert (wrong_id.value.response_code, _body(wrong_id.value)) == (404, {"error": "Role not found"})

    await admin.a_delete_realm_roles_of_user(user_id, [role])
    assert await admin.a_get_realm_roles_of_user(user_id) == []

    with pytest.raises(KeycloakGetError) as unknown:
        await admin.a_get_realm_role("banker")
    assert (unknown.value.response_code, _body(unknown.value)) == (404, {"error": "Could not find role"})


async def test_a_client_without_realm_management_roles_is_forbidden(keycloak: str) -> None:
    async with keycloak_admin_client(keycloak, "portal", "portal-dev-secret") as portal:
        with pytest.raises(KeycloakGetError) as listing:
            await portal.a_get_users()
        with pytest.raises(KeycloakPostError) as creating:
            await portal.a_create_user({"username": "mallory"})
    for refused in (listing.value, creating.value):
        assert (refused.response_code, _body(refused)) == (403, {"error": "HTTP 403 Forbidden"})


async def test_a_wrong_secret_is_invalid_client(keycloak: str) -> None:
    async with keycloak_admin_client(keycloak, CLIENT_ID, "not-the-secret") as admin:
        with pytest.raises(KeycloakAuthenticationError) as refused:
            await admin.a_get_users()
    assert refused.value.response_code == 401
    assert json.loads(refused.value.response_body) == {
        "error": "invalid_client",
        "error_description": "Invalid client or Invalid client credentials",
    }


async def test_token_endpoint_refusals(http: httpx.AsyncClient) -> None:
    token_path = f"/realms/{REALM}/protocol/openid-connect/token"
    unknown_client = await http.post(
        token_path, data={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"}
    )
    assert unknown_client.status_code == 401
    assert unknown_client.json()["error"] == "invalid_client"

    unknown_grant = await http.post(token_path, data={"grant_type": "banana"}, auth=("portal", "portal-dev-secret"))
    assert (unknown_grant.status_code, unknown_grant.json()) == (
        400,
        {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"},
    )

    password_grant = await http.post(
        token_path,
        data={"grant_type": "password", "username": "a", "password": "b"},
        auth=("portal", "portal-dev-secret"),
    )
    assert (password_grant.status_code, password_grant.json()) == (
        400,
        {"error": "unauthorized_client", "error_description": "Client not allowed for direct access grants"},
    )

    public_client = await http.post(
        token_path, data={"grant_type": "client_credentials", "client_id": "customer-portal"}
    )
    assert public_client.status_code == 401
    assert public_client.json()["error"] == "unauthorized_client"


async def test_admin_api_accepts_only_tokens_this_emulator_signed(keycloak: str, http: httpx.AsyncClient) -> None:
    users_path = f"/admin/realms/{REALM}/users"
    anonymous = await http.get(users_path)
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "HTTP 401 Unauthorized"})

    now = int(time.time())
    forger = RSAKey.generate_key(2048, parameters={"kid": "forged"}, private=True)
    forged = jwt.encode(
        {"alg": "RS256", "typ": "JWT", "kid": "forged"},
        {
            "iss": f"{keycloak}/realms/{REALM}",
            "iat": now,
            "exp": now + 300,
            "resource_access": {"realm-management": {"roles": sorted(REALM_MANAGEMENT_ROLES)}},
        },
        forger,
    )
    rejected = await http.get(users_path, headers={"Authorization": f"Bearer {forged}"})
    assert rejected.status_code == 401

    genuine = await _fetch_token(http, CLIENT_ID, CLIENT_SECRET)
    accepted = await http.get(users_path, headers={"Authorization": f"Bearer {genuine}"})
    assert accepted.status_code == 200  # only the dev compliance officers are people in a fresh realm
    assert [user["username"] for user in accepted.json()] == [name for name, _ in DEV_OFFICERS]


async def test_portal_token_verifies_against_the_published_jwks(keycloak: str, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/realms/{REALM}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials"},
        auth=("portal", "portal-dev-secret"),
    )
    assert response.status_code == 200
    body = response.json()
    assert {key: value for key, value in body.items() if key != "access_token"} == {
        "expires_in": 300,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "profile email",
    }

    token = await _decode_with_published_keys(http, body["access_token"])
    assert (token.header["alg"], token.header["typ"]) == ("RS256", "JWT")
    claims = token.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": f"{keycloak}/realms/{REALM}"},
        aud={"essential": True, "value": API_AUDIENCE},
        exp={"essential": True},
    ).validate(claims)
    assert claims["iss"] == f"{keycloak}/realms/{REALM}"
    assert claims["aud"] == API_AUDIENCE
    assert "portal" in claims["realm_access"]["roles"]
    assert claims["sub"] == _service_account("portal")["id"]
    assert (claims["azp"], claims["typ"]) == ("portal", "Bearer")
    assert claims["preferred_username"] == "service-account-portal"
    assert claims["exp"] - claims["iat"] == 300
    assert "resource_access" not in claims


async def test_service_token_from_form_credentials_carries_realm_management_roles(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/realms/{REALM}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    )
    assert response.status_code == 200
    claims = (await _decode_with_published_keys(http, response.json()["access_token"])).claims
    assert set(claims["resource_access"]["realm-management"]["roles"]) == REALM_MANAGEMENT_ROLES
    assert claims["preferred_username"] == f"service-account-{CLIENT_ID}"
    assert "aud" not in claims


async def test_discovery_document_points_at_the_emulators_own_endpoints(keycloak: str, http: httpx.AsyncClient) -> None:
    issuer = f"{keycloak}/realms/{REALM}"
    discovery = (await http.get(f"/realms/{REALM}/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == issuer
    assert discovery["token_endpoint"] == f"{issuer}/protocol/openid-connect/token"
    assert discovery["jwks_uri"] == f"{issuer}/protocol/openid-connect/certs"
    assert discovery["authorization_endpoint"] == f"{issuer}/protocol/openid-connect/auth"
    assert discovery["userinfo_endpoint"] == f"{issuer}/protocol/openid-connect/userinfo"
    assert "client_credentials" in discovery["grant_types_supported"]
    assert discovery["id_token_signing_alg_values_supported"] == ["RS256"]

    [key] = (await http.get(discovery["jwks_uri"])).json()["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert key["kid"] and key["n"] and key["e"] == "AQAB"
    assert "d" not in key

    unknown = await http.get("/realms/nowhere/.well-known/openid-configuration")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Realm does not exist"})


def test_realm_export_declares_the_clients_roles_and_profile_the_service_relies_on() -> None:
    assert EXPORT["realm"] == REALM
    assert {role["name"] for role in EXPORT["roles"]["realm"]} == {"portal", "ops", "customer", "events", "compliance"}

    clients = {client["clientId"]: client for client in EXPORT["clients"]}
    service_clients = (
        (CLIENT_ID, CLIENT_SECRET),
        ("portal", "portal-dev-secret"),
        ("ops", "ops-dev-secret"),
        ("events-reader", "events-dev-secret"),
        ("compliance", "compliance-dev-secret"),
    )
    for client_id, secret in service_clients:
        client = clients[client_id]
        assert (client["secret"], client["publicClient"], client["serviceAccountsEnabled"]) == (secret, False, True)
    for client_id in ("portal", "ops", "events-reader", "compliance"):
        [mapper] = clients[client_id]["protocolMappers"]
        assert mapper["protocolMapper"] == "oidc-audience-mapper"
        assert mapper["config"]["included.custom.audience"] == API_AUDIENCE

    login = clients["customer-portal"]
    assert (login["publicClient"], login["standardFlowEnabled"], login["serviceAccountsEnabled"]) == (True, True, False)
    [customer_id] = [m for m in login["protocolMappers"] if m["protocolMapper"] == "oidc-usermodel-attribute-mapper"]
    assert customer_id["config"]["user.attribute"] == "customer_id"
    assert customer_id["config"]["claim.name"] == "customer_id"

    lifecycle = _service_account(CLIENT_ID)
    assert lifecycle["username"] == f"service-account-{CLIENT_ID}"
    assert set(lifecycle["clientRoles"]["realm-management"]) == REALM_MANAGEMENT_ROLES  # type: ignore[index]
    assert _service_account("portal")["realmRoles"] == ["portal"]
    assert _service_account("ops")["realmRoles"] == ["ops"]
    assert _service_account("events-reader")["realmRoles"] == ["events"]
    assert _service_account("compliance")["realmRoles"] == ["compliance"]

    [profile_component] = EXPORT["components"]["org.keycloak.userprofile.UserProfileProvider"]
    [profile_json] = profile_component["config"]["kc.user.profile.config"]
    declared = {attribute["name"] for attribute in json.loads(profile_json)["attributes"]}
    assert declared == {"username", "email", "firstName", "lastName", "customer_id"}


@pytest.mark.stack  # runs the emulator's module as a process of its own
async def test_the_module_serves_the_default_realm_from_any_working_directory(tmp_path: Path) -> None:
    port = free_port()
    repo_root = DEFAULT_REALM_FILE.parent.parent
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "dev.emulators.keycloak", "--port", str(port)),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    discovery = await client.get(f"/realms/{REALM}/.well-known/openid-configuration")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the emulator did not start within 10 s")
        assert discovery.json()["issuer"] == f"http://127.0.0.1:{port}/realms/{REALM}"
    finally:
        process.terminate()
        await process.wait()
