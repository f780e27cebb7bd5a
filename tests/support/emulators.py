"""Talking to the stack's Keycloak emulator as a client of it: service-account tokens, and a customer's own
login by the password grant (the dev-only client) or in a browser (the portal's authorization code flow
with PKCE, its login form driven with httpx as a browser would)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

from dev.emulators.keycloak import DEFAULT_REALM_FILE, create_app
from dev.stack import DevStack
from tests.helpers import free_port, running_app

REALM = "customers"
DEV_LOGIN_CLIENT = "customer-dev-cli"  # public, password grant; dev/emulators/realm-customers.dev-clients.json
PORTAL_LOGIN_CLIENT = "customer-portal"  # public, authorization code + PKCE S256; the production realm's
PORTAL_CALLBACK = "http://localhost:3000/api/auth/callback/keycloak"
COMPLIANCE_CONSOLE = "compliance-console"  # officers' own login, authorization code + PKCE S256
COMPLIANCE_CALLBACK = "http://localhost:3001/callback"
DEV_OFFICERS = (
    ("officer-anna", "officer-anna-dev-password"),
    ("officer-ben", "officer-ben-dev-password"),
)  # NextAuth's callback for the provider
_FORM_ACTION = re.compile(r'<form id="kc-form-login"[^>]*\baction="([^"]+)"')


async def client_token(stack: DevStack, client_id: str, secret: str) -> str:
    """A client-credentials access token for `client_id` from the stack's Keycloak."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{stack.keycloak_url}/realms/customers/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


def service_account_client(stack: DevStack, client_id: str, secret: str) -> httpx.AsyncClient:
    """An HTTP client to the API holding `client_id`'s service-account token, renewed a minute before it
    expires (tokens live 300 s; a session of tests runs longer). A request that names its own
    Authorization header keeps it."""
    issued = [""]  # every header value this client has held, the current one last
    renew_at = [0.0]

    async def authorize(request: httpx.Request) -> None:
        if request.headers.get("Authorization") not in issued:
            return  # the test sent another token on purpose
        if time.monotonic() >= renew_at[0]:
            renew_at[0] = time.monotonic() + 240
            issued.append(f"Bearer {await client_token(stack, client_id, secret)}")
            http.headers["Authorization"] = issued[-1]
        request.headers["Authorization"] = issued[-1]

    http = httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": ""}, event_hooks={"request": [authorize]}, timeout=30
    )
    return http


def token_endpoint(keycloak_url: str) -> str:
    return f"{keycloak_url}/realms/{REALM}/protocol/openid-connect/token"


def auth_endpoint(keycloak_url: str) -> str:
    return f"{keycloak_url}/realms/{REALM}/protocol/openid-connect/auth"


async def password_login(keycloak_url: str, username: str, password: str, *, scope: str = "openid") -> httpx.Response:
    """The token endpoint's answer to a customer's password grant through the dev-only client."""
    async with httpx.AsyncClient() as http:
        return await http.post(
            token_endpoint(keycloak_url),
            data={
                "grant_type": "password",
                "client_id": DEV_LOGIN_CLIENT,
                "username": username,
                "password": password,
                "scope": scope,
            },
        )


async def password_token(keycloak_url: str, username: str, password: str) -> str:
    """A customer's access token by the password grant."""
    response = await password_login(keycloak_url, username, password)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def pkce_pair() -> tuple[str, str]:
    """A code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def form_action(page: httpx.Response) -> str:
    """Where the login page's form posts to, as a browser reads it."""
    match = _FORM_ACTION.search(page.text)
    assert match is not None, f"no login form in {page.status_code} {page.text[:500]}"
    return html.unescape(match[1])


def redirect_params(response: httpx.Response) -> dict[str, str]:
    """The parameters of an authorization response redirected to the client (query or fragment)."""
    assert response.status_code == 302, (response.status_code, response.text[:500])
    location = urlsplit(response.headers["location"])
    return {name: values[0] for name, values in parse_qs(location.query or location.fragment).items()}


@dataclass(frozen=True)
class BrowserLogin:
    """A login started at the authorization endpoint: the browser (with its cookies) and the PKCE verifier."""

    browser: httpx.AsyncClient
    verifier: str
    page: httpx.Response  # the login page

    async def submit(self, username: str, password: str) -> httpx.Response:
        return await self.browser.post(form_action(self.page), data={"username": username, "password": password})


async def start_browser_login(
    browser: httpx.AsyncClient,
    keycloak_url: str,
    *,
    state: str = "state-1",
    nonce: str | None = "nonce-1",
    client_id: str = PORTAL_LOGIN_CLIENT,
    redirect_uri: str = PORTAL_CALLBACK,
) -> BrowserLogin:
    """What the portal (NextAuth) sends the browser to: the authorization endpoint with PKCE S256."""
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid profile email",
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = await browser.get(auth_endpoint(keycloak_url), params=params | ({"nonce": nonce} if nonce else {}))
    assert page.status_code == 200, page.text[:500]
    return BrowserLogin(browser=browser, verifier=verifier, page=page)


async def exchange_code(
    http: httpx.AsyncClient,
    keycloak_url: str,
    code: str,
    verifier: str,
    *,
    client_id: str = PORTAL_LOGIN_CLIENT,
    redirect_uri: str = PORTAL_CALLBACK,
) -> httpx.Response:
    """The portal's server exchanging the code it received at its callback."""
    return await http.post(
        token_endpoint(keycloak_url),
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )


async def browser_token(
    keycloak_url: str,
    username: str,
    password: str,
    *,
    client_id: str = PORTAL_LOGIN_CLIENT,
    redirect_uri: str = PORTAL_CALLBACK,
) -> str:
    """An access token by a browser login (the portal's by default): login page, form, redirect with a code,
    exchange."""
    async with httpx.AsyncClient() as browser:
        login = await start_browser_login(browser, keycloak_url, client_id=client_id, redirect_uri=redirect_uri)
        answer = redirect_params(await login.submit(username, password))
        assert answer["state"] == "state-1", answer
        response = await exchange_code(
            browser, keycloak_url, answer["code"], login.verifier, client_id=client_id, redirect_uri=redirect_uri
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@asynccontextmanager
async def keycloak_admin_client(base_url: str, client_id: str, secret: str) -> AsyncIterator[KeycloakAdmin]:
    """python-keycloak's admin client as the worker builds it, against a Keycloak (emulator) at `base_url`."""
    connection = KeycloakOpenIDConnection(
        server_url=base_url, realm_name=REALM, client_id=client_id, client_secret_key=secret
    )
    try:
        yield KeycloakAdmin(connection=connection)
    finally:
        # conn.aclose() leaves open the separate httpx client python-keycloak fetches tokens with.
        await connection.keycloak_openid.connection.aclose()
        await connection.aclose()


async def keycloak_users(stack: DevStack, customer_id: str) -> list[dict[str, Any]]:
    """The Keycloak users carrying this customer_id, as the admin API (the emulator's own view) says."""
    token = await client_token(stack, "customer-lifecycle", "customer-lifecycle-dev-secret")
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{stack.keycloak_url}/admin/realms/{REALM}/users",
            params={"q": f"customer_id:{customer_id}"},
            headers={"Authorization": f"Bearer {token}"},
        )
    response.raise_for_status()
    return list(response.json())


@asynccontextmanager
async def running_keycloak_emulator(realm_export: Mapping[str, Any] | Path = DEFAULT_REALM_FILE) -> AsyncIterator[str]:
    """A fresh Keycloak emulator in this process on a free port, seeded from `realm_export`; yields its base
    URL (also its public URL, so the tokens it issues name it)."""
    port = free_port()
    app = create_app(realm_export=realm_export, public_url=f"http://127.0.0.1:{port}")
    async with running_app(app, port) as base_url:
        yield base_url
