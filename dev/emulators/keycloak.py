"""A Keycloak emulator: the subset of Keycloak 26 our Keycloak contract (spec/keycloak.md) describes.

No Keycloak server can be installed on the development machines, so the dev stack and the tests talk
to this instead. It is seeded from the same realm export the real Keycloak imports (clients, secrets,
roles, service-account grants, protocol mappers, the declared user profile), keeps its state in memory
(and, with `--state-dir`, its users, signing key and sent e-mails on disk: `keycloak_state.py`), and answers with Keycloak's own status codes and JSON bodies, so client code exercised here meets the
same responses in production.

Besides the realm export, it loads the development-only clients of `realm-customers.dev-clients.json`
(a public client with the password grant, for curl and the tests), which the real Keycloak never
imports; `--no-dev-clients` serves the production realm alone.

Grants: client_credentials, password (direct access grants) and authorization_code with PKCE, through
the authorization endpoint's login page, for users whose password was set with reset-password.

Known simplifications: no refresh tokens, SSO sessions, logout, userinfo or introspection; no brute-force
detection; no password policy; required actions are not performed (a user with one cannot finish
signing in); response modes query and fragment only; no default roles (`default-roles-<realm>`,
`offline_access`) and no `account` audience in tokens; no user-profile validators beyond dropping
undeclared attributes; admin permissions are read from the token's `realm-management` roles.

Run it with `python -m dev.emulators.keycloak --port 8080`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from dev.emulators.keycloak_logins import (
    DEFAULT_SCOPES,
    OPTIONAL_SCOPES,
    check_password,
    dummy_hash,
    error_page,
    hash_password,
    login_page,
    pkce_matches,
    valid_pkce_value,
)
from dev.emulators.keycloak_state import RealmStore
from dev.emulators.latency import InjectedLatency
from dev.emulators.state import SaveBeforeAnswering, touch
from kit.logging import configure_logging
from kit.settings import get_settings

__all__ = ["DEFAULT_REALM_FILE", "DEV_CLIENTS_FILE", "create_app", "main"]

DEFAULT_REALM_FILE = Path(__file__).resolve().parents[2] / "deploy" / "realm-customers.json"
DEV_CLIENTS_FILE = Path(__file__).resolve().parent / "realm-customers.dev-clients.json"
DEFAULT_ACCESS_TOKEN_LIFESPAN = 300
DEFAULT_ACCESS_CODE_LIFESPAN = 60  # an authorization code's life (realm `accessCodeLifespan`)
DEFAULT_ACCESS_CODE_LIFESPAN_LOGIN = 1800  # how long a login page may wait (realm `accessCodeLifespanLogin`)
DEFAULT_MAX_RESULTS = 100  # Keycloak's Constants.DEFAULT_MAX_RESULTS for user listings
ACTION_TOKEN_LIFESPAN = 12 * 3600  # realm default for admin-generated action tokens
TOKEN_SCOPE = "profile email"
AUTH_SESSION_COOKIE = "AUTH_SESSION_ID"  # ties a login form to the browser that asked for it
# The login theme's messages (messages_en.properties).
INVALID_USER_MESSAGE = "Invalid username or password."
ACCOUNT_DISABLED_MESSAGE = "Account is disabled, contact your administrator."
REQUIRED_ACTION_MESSAGES = {
    "UPDATE_PASSWORD": "You need to change your password to activate your account.",
    "VERIFY_EMAIL": "You need to verify your email address to activate your account.",
    "UPDATE_PROFILE": "You need to update your user profile to activate your account.",
    "CONFIGURE_TOTP": "You need to set up Mobile Authenticator to activate your account.",
}
# Every property of Keycloak's CredentialRepresentation: Jackson refuses a body with any other.
CREDENTIAL_REPRESENTATION_FIELDS = frozenset(
    {
        "algorithm",
        "config",
        "counter",
        "createdDate",
        "credentialData",
        "device",
        "digits",
        "federationLink",
        "hashIterations",
        "hashedSaltedValue",
        "id",
        "period",
        "priority",
        "salt",
        "secretData",
        "temporary",
        "type",
        "userLabel",
        "value",
    }
)

REALM_MANAGEMENT = "realm-management"
USER_PROFILE_PROVIDER = "org.keycloak.userprofile.UserProfileProvider"
USER_PROFILE_CONFIG = "kc.user.profile.config"
ROOT_ATTRIBUTES = frozenset({"username", "email", "firstName", "lastName"})
# Clients every realm gets on import even when the export does not list them.
BUILT_IN_CLIENTS = frozenset(
    {"account", "account-console", "admin-cli", "broker", REALM_MANAGEMENT, "security-admin-console"}
)
# Required-action provider ids; Keycloak silently ignores others on user writes and refuses them
# in execute-actions-email.
REQUIRED_ACTIONS = frozenset(
    {
        "CONFIGURE_TOTP",
        "CONFIGURE_RECOVERY_AUTHN_CODES",
        "TERMS_AND_CONDITIONS",
        "UPDATE_PASSWORD",
        "UPDATE_PROFILE",
        "VERIFY_EMAIL",
        "VERIFY_PROFILE",
        "delete_account",
        "delete_credential",
        "update_user_locale",
        "webauthn-register",
        "webauthn-register-passwordless",
    }
)
# Every property of Keycloak's UserRepresentation: Jackson refuses a body with any other.
USER_REPRESENTATION_FIELDS = frozenset(
    {
        "access",
        "applicationRoles",
        "attributes",
        "clientConsents",
        "clientRoles",
        "createdTimestamp",
        "credentials",
        "disableableCredentialTypes",
        "email",
        "emailVerified",
        "enabled",
        "federatedIdentities",
        "federationLink",
        "firstName",
        "groups",
        "id",
        "lastName",
        "notBefore",
        "origin",
        "realmRoles",
        "requiredActions",
        "self",
        "serviceAccountClientId",
        "socialLinks",
        "totp",
        "userProfileMetadata",
        "username",
    }
)

# realm-management roles that satisfy each admin permission (manage implies view implies query).
QUERY_USERS = frozenset({"query-users", "view-users", "manage-users", "realm-admin"})
VIEW_USERS = frozenset({"view-users", "manage-users", "realm-admin"})
MANAGE_USERS = frozenset({"manage-users", "realm-admin"})
VIEW_REALM = frozenset({"view-realm", "manage-realm", "realm-admin"})

# One `key:value` pair of the `q` search parameter; either side may be double-quoted.
Q_PAIR = re.compile(r'(?:"((?:\\.|[^\\"])+)"|([^"\s:][^\s:]*)):(?:"((?:\\.|[^\\"])+)"|([^"\s]\S*))')


class KeycloakError(Exception):
    """A refusal, rendered with the status code and JSON body the real Keycloak sends."""

    def __init__(self, status: int, body: Mapping[str, str]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = dict(body)


def _error_message(status: int, message: str) -> KeycloakError:
    """Keycloak's ErrorResponse shape, used by the admin API for business refusals."""
    return KeycloakError(status, {"errorMessage": message})


def _unparsable() -> KeycloakError:
    """What Keycloak answers when Jackson cannot bind a request body (unknown field, wrong type)."""
    return KeycloakError(400, {"error": "unknown_error", "error_description": "Cannot parse the JSON"})


def _unauthorized() -> KeycloakError:
    return KeycloakError(401, {"error": "HTTP 401 Unauthorized"})


def _oauth_error(status: int, error: str, description: str) -> KeycloakError:
    """The OAuth 2.0 error shape of the token endpoint."""
    return KeycloakError(status, {"error": error, "error_description": description})


def _invalid_client() -> KeycloakError:
    return _oauth_error(401, "invalid_client", "Invalid client or Invalid client credentials")


@dataclass(frozen=True)
class _AttributeClaim:
    """An oidc-usermodel-attribute-mapper: copies a user attribute into a token claim."""

    attribute: str
    claim: str
    multivalued: bool
    access_token: bool = True
    id_token: bool = False


@dataclass(frozen=True)
class _Client:
    client_id: str
    secret: str | None
    public: bool
    enabled: bool
    service_accounts_enabled: bool
    redirect_uris: tuple[str, ...]
    audiences: tuple[str, ...]
    attribute_claims: tuple[_AttributeClaim, ...]
    # Customers' own logins: which flows the client may use, and the PKCE method it enforces.
    standard_flow_enabled: bool = True
    implicit_flow_enabled: bool = False
    direct_access_grants_enabled: bool = False
    consent_required: bool = False
    bearer_only: bool = False
    pkce_method: str | None = None

    def allows_redirect(self, uri: str) -> bool:
        return any(
            uri == allowed or (allowed.endswith("*") and uri.startswith(allowed[:-1])) for allowed in self.redirect_uris
        )


@dataclass(frozen=True)
class _Role:
    id: str
    name: str
    description: str | None

    def representation(self, realm_id: str, *, brief: bool = False) -> dict[str, Any]:
        rep: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.description is not None:
            rep["description"] = self.description
        rep |= {"composite": False, "clientRole": False, "containerId": realm_id}
        return rep if brief else rep | {"attributes": {}}


@dataclass
class _User:
    id: str
    username: str
    created_timestamp: int
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    enabled: bool = False  # Keycloak creates users disabled unless the representation says otherwise
    email_verified: bool = False
    attributes: dict[str, list[str]] = field(default_factory=dict)
    required_actions: list[str] = field(default_factory=list)
    realm_roles: set[str] = field(default_factory=set)
    client_roles: dict[str, set[str]] = field(default_factory=dict)
    service_account_client_id: str | None = None
    password_hash: str | None = None  # `dev.emulators.keycloak_logins.hash_password`; never the password

    def representation(self) -> dict[str, Any]:
        """The UserRepresentation; like Keycloak, unset fields and empty attributes are left out."""
        rep: dict[str, Any] = {"id": self.id, "username": self.username}
        for name, value in (("firstName", self.first_name), ("lastName", self.last_name), ("email", self.email)):
            if value is not None:
                rep[name] = value
        rep["emailVerified"] = self.email_verified
        if self.attributes:
            rep["attributes"] = {name: list(values) for name, values in self.attributes.items()}
        rep |= {
            "createdTimestamp": self.created_timestamp,
            "enabled": self.enabled,
            "totp": False,
            "disableableCredentialTypes": [],
            "requiredActions": list(self.required_actions),
            "notBefore": 0,
        }
        if self.service_account_client_id is not None:
            rep["serviceAccountClientId"] = self.service_account_client_id
        return rep


@dataclass
class _Realm:
    id: str
    name: str
    access_token_lifespan: int
    duplicate_emails_allowed: bool
    declared_attributes: frozenset[str]
    display_name: str = ""
    login_with_email_allowed: bool = True
    access_code_lifespan: int = DEFAULT_ACCESS_CODE_LIFESPAN
    access_code_lifespan_login: int = DEFAULT_ACCESS_CODE_LIFESPAN_LOGIN
    roles: dict[str, _Role] = field(default_factory=dict)
    clients: dict[str, _Client] = field(default_factory=dict)
    users: dict[str, _User] = field(default_factory=dict)
    sent_emails: list[dict[str, Any]] = field(default_factory=list)

    def role(self, name: str) -> _Role:
        """The realm role, created on first reference as Keycloak's import does."""
        if name not in self.roles:
            self.roles[name] = _Role(id=str(uuid.uuid4()), name=name, description=None)
        return self.roles[name]

    def user_by_username(self, username: str) -> _User | None:
        return next((u for u in self.users.values() if u.username == username.lower()), None)

    def email_taken(self, email: str, *, by_other_than: str | None = None) -> bool:
        if self.duplicate_emails_allowed:
            return False
        return any(u.email == email and u.id != by_other_than for u in self.users.values())

    def service_account(self, client_id: str) -> _User:
        return next(u for u in self.users.values() if u.service_account_client_id == client_id)

    def declared(self, attributes: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """Keycloak >= 24 keeps only attributes the user profile declares, and drops empty ones."""
        return {
            name: list(values) for name, values in attributes.items() if name in self.declared_attributes and values
        }


def _load_realm(export: Mapping[str, Any]) -> _Realm:
    """Builds the in-memory realm from a realm export, filling in what Keycloak's import would."""
    realm = _Realm(
        id=export.get("id", export["realm"]),
        name=export["realm"],
        access_token_lifespan=export.get("accessTokenLifespan", DEFAULT_ACCESS_TOKEN_LIFESPAN),
        duplicate_emails_allowed=export.get("duplicateEmailsAllowed", False),
        declared_attributes=_declared_attributes(export),
        display_name=export.get("displayName") or export["realm"],
        login_with_email_allowed=export.get("loginWithEmailAllowed", True),
        access_code_lifespan=export.get("accessCodeLifespan", DEFAULT_ACCESS_CODE_LIFESPAN),
        access_code_lifespan_login=export.get("accessCodeLifespanLogin", DEFAULT_ACCESS_CODE_LIFESPAN_LOGIN),
    )
    for rep in export.get("roles", {}).get("realm", []):
        role = _Role(id=rep.get("id") or str(uuid.uuid4()), name=rep["name"], description=rep.get("description"))
        realm.roles[role.name] = role
    for rep in export.get("clients", []):
        realm.clients[rep["clientId"]] = _load_client(rep)
    for rep in export.get("users", []):
        user = _User(
            id=rep.get("id") or str(uuid.uuid4()),
            username=rep["username"].lower(),
            created_timestamp=rep.get("createdTimestamp", _now_ms()),
            email=_normalised_email(rep.get("email")),
            first_name=rep.get("firstName"),
            last_name=rep.get("lastName"),
            enabled=rep.get("enabled", False),
            email_verified=rep.get("emailVerified", False),
            attributes=realm.declared(rep.get("attributes") or {}),
            required_actions=[a for a in rep.get("requiredActions", []) if a in REQUIRED_ACTIONS],
            realm_roles={realm.role(name).name for name in rep.get("realmRoles", [])},
            client_roles={client: set(names) for client, names in rep.get("clientRoles", {}).items()},
            service_account_client_id=rep.get("serviceAccountClientId"),
        )
        # A password credential in the export (as Keycloak imports one: `value` in clear, hashed on import).
        passwords = [c["value"] for c in rep.get("credentials", []) if c.get("type") == "password" and c.get("value")]
        if passwords:
            user.password_hash = hash_password(passwords[0])
        realm.users[user.id] = user
    linked = {u.service_account_client_id for u in realm.users.values()}
    for client in realm.clients.values():
        if client.service_accounts_enabled and client.client_id not in linked:
            user = _User(
                id=str(uuid.uuid4()),
                username=f"service-account-{client.client_id}",
                created_timestamp=_now_ms(),
                enabled=True,
                service_account_client_id=client.client_id,
            )
            realm.users[user.id] = user
    return realm


def _declared_attributes(export: Mapping[str, Any]) -> frozenset[str]:
    """Custom attribute names from the declarative user profile component (root attributes excluded)."""
    names: set[str] = set()
    for component in export.get("components", {}).get(USER_PROFILE_PROVIDER, []):
        for config in component.get("config", {}).get(USER_PROFILE_CONFIG, []):
            names |= {attribute["name"] for attribute in json.loads(config).get("attributes", [])}
    return frozenset(names - ROOT_ATTRIBUTES)


def _load_client(rep: Mapping[str, Any]) -> _Client:
    audiences: list[str] = []
    claims: list[_AttributeClaim] = []
    for mapper in rep.get("protocolMappers", []):
        config = mapper.get("config", {})
        in_access_token = config.get("access.token.claim", "true") == "true"  # absent: true, as Keycloak reads it
        in_id_token = config.get("id.token.claim") == "true"  # absent: false
        if mapper.get("protocolMapper") == "oidc-audience-mapper" and in_access_token:
            audience = config.get("included.custom.audience") or config.get("included.client.audience")
            if audience:
                audiences.append(audience)
        elif mapper.get("protocolMapper") == "oidc-usermodel-attribute-mapper" and (in_access_token or in_id_token):
            multivalued = config.get("multivalued") == "true"
            claims.append(
                _AttributeClaim(
                    config["user.attribute"], config["claim.name"], multivalued, in_access_token, in_id_token
                )
            )
    return _Client(
        client_id=rep["clientId"],
        secret=rep.get("secret"),
        public=rep.get("publicClient", False),
        enabled=rep.get("enabled", True),
        service_accounts_enabled=rep.get("serviceAccountsEnabled", False),
        redirect_uris=tuple(rep.get("redirectUris", [])),
        audiences=tuple(dict.fromkeys(audiences)),
        attribute_claims=tuple(claims),
        standard_flow_enabled=rep.get("standardFlowEnabled", True),
        implicit_flow_enabled=rep.get("implicitFlowEnabled", False),
        direct_access_grants_enabled=rep.get("directAccessGrantsEnabled", False),
        consent_required=rep.get("consentRequired", False),
        bearer_only=rep.get("bearerOnly", False),
        pkce_method=(rep.get("attributes") or {}).get("pkce.code.challenge.method") or None,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _normalised_email(email: str | None) -> str | None:
    """Keycloak stores emails lowercased, and a blank email as none."""
    if email is None or not email.strip():
        return None
    return email.strip().lower()


def _int_param(request: Request, name: str) -> int | None:
    """An Integer query parameter; JAX-RS answers an unparsable one with a plain 404."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise KeycloakError(404, {"error": "HTTP 404 Not Found"}) from None


async def _json_body(request: Request) -> Any:
    """The parsed body; an empty body is JSON null, as JAX-RS hands it to the resource."""
    body = await request.body()
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise _unparsable() from None


def _user_representation(body: Any) -> dict[str, Any]:
    """Binds a UserRepresentation the way Jackson does: unknown fields and wrong shapes are refused."""
    if not isinstance(body, dict) or not body.keys() <= USER_REPRESENTATION_FIELDS:
        raise _unparsable()
    for name in ("username", "email", "firstName", "lastName"):
        if not isinstance(body.get(name), str | None):
            raise _unparsable()
    for name in ("enabled", "emailVerified"):
        if not isinstance(body.get(name), bool | None):
            raise _unparsable()
    if not isinstance(body.get("createdTimestamp"), int | None):
        raise _unparsable()
    attributes = body.get("attributes")
    if attributes is not None and not (
        isinstance(attributes, dict)
        and all(isinstance(values, list) and all(isinstance(v, str) for v in values) for values in attributes.values())
    ):
        raise _unparsable()
    actions = body.get("requiredActions")
    if actions is not None and not (isinstance(actions, list) and all(isinstance(a, str) for a in actions)):
        raise _unparsable()
    return body


def _parse_q(q: str) -> dict[str, str]:
    """The `q` parameter: space-separated `key:value` pairs, either side optionally double-quoted."""
    pairs: dict[str, str] = {}
    for match in Q_PAIR.finditer(q):
        key = _unescape(match[1]) if match[1] is not None else match[2]
        pairs[key] = _unescape(match[3]) if match[3] is not None else match[4]
    return pairs


def _unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted)


def _contains(value: str | None, wanted: str, *, exact: bool) -> bool:
    """Keycloak's username/email/name filters: case-insensitive, substring unless `exact`."""
    if value is None:
        return False
    return value.lower() == wanted.lower() if exact else wanted.lower() in value.lower()


def _search_matches(user: _User, search: str) -> bool:
    """The `search` parameter: prefix by default, `*x*` infix, `"x"` exact, on username, email and names."""
    if len(search) > 1 and search.startswith('"') and search.endswith('"'):
        pattern = re.escape(search[1:-1].lower())
    else:
        pattern = re.escape(search.lower()).replace(r"\*", ".*") + ".*"
    values = (user.username, user.email, user.first_name, user.last_name)
    return any(value is not None and re.fullmatch(pattern, value.lower()) for value in values)


def _token_scope(requested: str | None) -> str | None:
    """The `scope` a user's token carries for this request, or None when it asks for an unknown scope.

    Every client of the realm has the new realm's client scopes: profile and email (the default ones
    that show in `scope`) and the optional ones, which show when requested; `openid` when requested.
    """
    names = (requested or "").split()
    if not set(names) <= {"openid", *DEFAULT_SCOPES, *OPTIONAL_SCOPES}:
        return None
    granted = ["openid"] if "openid" in names else []
    granted += ["profile", "email"] + [name for name in OPTIONAL_SCOPES if name in names]
    return " ".join(granted)


def _verified_redirect_uri(client: _Client, redirect_uri: str | None, *, oidc: bool) -> str | None:
    """Keycloak's RedirectUtils: the URI must match one of the client's (a trailing `*` is a prefix);
    without one, an OAuth2 (not OpenID) request may use the client's single, wildcard-free URI."""
    if redirect_uri is None:
        single = client.redirect_uris[0] if len(client.redirect_uris) == 1 else None
        return single if not oidc and single is not None and "*" not in single else None
    return redirect_uri if client.allows_redirect(redirect_uri) else None


def _pkce_refusal(client: _Client, challenge: str | None, method: str | None) -> str | None:
    """AuthorizationEndpointChecker.checkPKCEParams: the error description, or None when acceptable."""
    if client.pkce_method:
        if method is None:
            return "Missing parameter: code_challenge_method"
        if method != client.pkce_method:
            return "Invalid parameter: code challenge method is not matching the configured one"
        if challenge is None:
            return "Missing parameter: code_challenge"
        return None if valid_pkce_value(challenge) else "Invalid parameter: code_challenge"
    if challenge is None:
        return "Missing parameter: code_challenge" if method is not None else None
    if method is not None and method not in ("S256", "plain"):
        return "Invalid parameter: code_challenge_method"
    return None if valid_pkce_value(challenge) else "Invalid parameter: code_challenge"


def _redirect(redirect_uri: str, response_mode: str, params: Mapping[str, str]) -> Response:
    """The authorization response: parameters in the query (default for `code`) or the fragment."""
    separator = "#" if response_mode == "fragment" else ("&" if "?" in redirect_uri else "?")
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", status_code=302)


def _error_page(status: int, message: str) -> Response:
    return HTMLResponse(error_page(message), status_code=status)


@dataclass
class _PendingLogin:
    """A login page shown for an authorization request (Keycloak's authentication session in a tab)."""

    root_session_id: str  # the browser's AUTH_SESSION_ID cookie
    client_id: str
    redirect_uri: str  # the verified one, where the answer goes
    redirect_uri_param: str | None  # as the request sent it; the code exchange must send the same
    response_mode: str
    state: str | None
    nonce: str | None
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float


@dataclass
class _IssuedCode:
    """An authorization code: one exchange, before `expires_at`, by the client it was issued to."""

    client_id: str
    user_id: str
    redirect_uri_param: str | None
    nonce: str | None
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    session_id: str
    auth_time: int
    expires_at: float


class _Emulator:
    """The realm's state and the HTTP handlers over it."""

    def __init__(self, realm: _Realm, public_url: str) -> None:
        self.realm = realm
        self.public_url = public_url.rstrip("/")
        self.issuer = f"{self.public_url}/realms/{realm.name}"
        self.key = RSAKey.generate_key(
            2048, parameters={"kid": secrets.token_urlsafe(32), "alg": "RS256", "use": "sig"}, private=True
        )
        self.claims_registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer}, exp={"essential": True}
        )
        # Customers' own logins: short-lived, so kept in memory only (a restart means signing in again).
        self.pending_logins: dict[str, _PendingLogin] = {}  # by tab id
        self.issued_codes: dict[str, _IssuedCode] = {}  # by code

    def routes(self) -> list[Route]:
        oidc = "/realms/{realm}/protocol/openid-connect"
        users = "/admin/realms/{realm}/users"
        return [
            Route("/realms/{realm}/.well-known/openid-configuration", self.discovery, methods=["GET"]),
            Route(f"{oidc}/certs", self.certs, methods=["GET"]),
            Route(f"{oidc}/token", self.token, methods=["POST"]),
            Route(f"{oidc}/auth", self.authorize, methods=["GET"]),
            Route("/realms/{realm}/login-actions/authenticate", self.authenticate, methods=["POST"]),
            Route(users, self.list_users, methods=["GET"]),
            Route(users, self.create_user, methods=["POST"]),
            Route(f"{users}/count", self.count_users, methods=["GET"]),
            Route(f"{users}/{{user_id}}", self.get_user, methods=["GET"]),
            Route(f"{users}/{{user_id}}", self.update_user, methods=["PUT"]),
            Route(f"{users}/{{user_id}}", self.delete_user, methods=["DELETE"]),
            Route(f"{users}/{{user_id}}/execute-actions-email", self.execute_actions_email, methods=["PUT"]),
            Route(f"{users}/{{user_id}}/reset-password", self.reset_password, methods=["PUT"]),
            Route(
                f"{users}/{{user_id}}/role-mappings/realm", self.realm_role_mappings, methods=["GET", "POST", "DELETE"]
            ),
            Route("/admin/realms/{realm}/roles/{role_name}", self.get_role, methods=["GET"]),
            Route("/_emulator/sent-emails", self.sent_emails, methods=["GET"]),
        ]

    # OpenID Connect

    async def discovery(self, request: Request) -> Response:
        self._oidc_realm(request)
        endpoints = f"{self.issuer}/protocol/openid-connect"
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{endpoints}/auth",
                "token_endpoint": f"{endpoints}/token",
                "introspection_endpoint": f"{endpoints}/token/introspect",
                "userinfo_endpoint": f"{endpoints}/userinfo",
                "end_session_endpoint": f"{endpoints}/logout",
                "jwks_uri": f"{endpoints}/certs",
                # What the real realm offers; the emulator serves client_credentials, password and
                # authorization_code (no refresh tokens).
                "grant_types_supported": ["authorization_code", "refresh_token", "password", "client_credentials"],
                "response_types_supported": ["code", "none", "id_token", "token", "id_token token", "code id_token"],
                "subject_types_supported": ["public", "pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["openid", *DEFAULT_SCOPES, *OPTIONAL_SCOPES],
                "claims_supported": [
                    "aud",
                    "sub",
                    "iss",
                    "auth_time",
                    "name",
                    "given_name",
                    "family_name",
                    "preferred_username",
                    "email",
                    "acr",
                ],
                "code_challenge_methods_supported": ["plain", "S256"],
            }
        )

    async def certs(self, request: Request) -> Response:
        self._oidc_realm(request)
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def token(self, request: Request) -> Response:
        """The token endpoint; Keycloak checks the grant type before it authenticates the client."""
        self._oidc_realm(request)
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True))
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _oauth_error(400, "invalid_request", "Missing form parameter: grant_type")
        if grant_type not in ("client_credentials", "password", "authorization_code"):
            raise _oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")
        client = self._authenticate_client(request, form)
        if grant_type == "password":
            return await self._password_grant(client, form)
        if grant_type == "authorization_code":
            return self._code_grant(client, form)
        if client.public:
            raise _oauth_error(401, "unauthorized_client", "Public client not allowed to retrieve service account")
        if not client.service_accounts_enabled:
            raise _oauth_error(401, "unauthorized_client", "Client not enabled to retrieve service account")
        access_token = self._access_token(client, self.realm.service_account(client.client_id))
        return JSONResponse(
            {
                "access_token": access_token,
                "expires_in": self.realm.access_token_lifespan,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": TOKEN_SCOPE,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _authenticate_client(self, request: Request, form: Mapping[str, str]) -> _Client:
        """client_secret_basic (preferred when present) or client_secret_post, as Keycloak accepts both."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise _invalid_client() from None
            basic_id, _, basic_secret = decoded.partition(":")
            client_id, secret = unquote(basic_id), unquote(basic_secret)
        if not client_id:
            raise _oauth_error(400, "invalid_client", "Missing client_id parameter")
        client = self.realm.clients.get(client_id)
        if client is None or not client.enabled:
            raise _invalid_client()
        if not client.public and not (
            client.secret and secret and secrets.compare_digest(client.secret.encode(), secret.encode())
        ):
            raise _invalid_client()
        return client

    def _access_token(
        self, client: _Client, user: _User, *, scope: str = TOKEN_SCOPE, session: tuple[str, int] | None = None
    ) -> str:
        """An access token for `user` through `client`; `session` (id, auth time) for a user's own login."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + self.realm.access_token_lifespan,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
        }
        if client.audiences:
            claims["aud"] = client.audiences[0] if len(client.audiences) == 1 else list(client.audiences)
        claims |= {"sub": user.id, "typ": "Bearer", "azp": client.client_id}
        if session is not None:
            claims |= {"auth_time": session[1], "sid": session[0]}
        claims["acr"] = "1"
        if user.realm_roles:
            claims["realm_access"] = {"roles": sorted(user.realm_roles)}
        resource_access = {name: {"roles": sorted(roles)} for name, roles in sorted(user.client_roles.items()) if roles}
        if resource_access:
            claims["resource_access"] = resource_access
        claims["scope"] = scope
        if user.service_account_client_id is not None:
            claims["client_id"] = client.client_id  # service-account tokens only, as Keycloak's mapper adds it
        claims |= self._user_claims(client, user, id_token=False)
        return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": self.key.kid}, claims, self.key)

    def _user_claims(self, client: _Client, user: _User, *, id_token: bool) -> dict[str, Any]:
        """The profile and email scopes' claims, then the client's attribute mappers for this token type."""
        claims: dict[str, Any] = {"email_verified": user.email_verified}
        names = [name for name in (user.first_name, user.last_name) if name]
        if names:
            claims["name"] = " ".join(names)
        claims["preferred_username"] = user.username
        if user.first_name:
            claims["given_name"] = user.first_name
        if user.last_name:
            claims["family_name"] = user.last_name
        if user.email is not None:
            claims["email"] = user.email
        for mapping in client.attribute_claims:
            values = user.attributes.get(mapping.attribute)
            if values and (mapping.id_token if id_token else mapping.access_token):
                claims[mapping.claim] = list(values) if mapping.multivalued else values[0]
        return claims

    def _id_token(
        self, client: _Client, user: _User, *, access_token: str, nonce: str | None, session: tuple[str, int]
    ) -> str:
        """The OpenID Connect ID token of a login whose scope includes `openid`."""
        now = int(time.time())
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims: dict[str, Any] = {
            "exp": now + self.realm.access_token_lifespan,
            "iat": now,
            "auth_time": session[1],
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": client.client_id,
            "sub": user.id,
            "typ": "ID",
            "azp": client.client_id,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims |= {
            "sid": session[0],
            "at_hash": base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii"),
            "acr": "1",
        }
        claims |= self._user_claims(client, user, id_token=True)
        return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": self.key.kid}, claims, self.key)

    def _user_token_response(
        self, client: _Client, user: _User, *, scope: str, nonce: str | None, session: tuple[str, int]
    ) -> Response:
        access_token = self._access_token(client, user, scope=scope, session=session)
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": self.realm.access_token_lifespan,
            "refresh_expires_in": 0,  # the emulator issues no refresh tokens
            "token_type": "Bearer",
        }
        if "openid" in scope.split():
            body["id_token"] = self._id_token(client, user, access_token=access_token, nonce=nonce, session=session)
        body |= {"not-before-policy": 0, "session_state": session[0], "scope": scope}
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # Customers' own logins: the password grant, the authorization endpoint and its login page, the code grant

    async def _password_grant(self, client: _Client, form: Mapping[str, str]) -> Response:
        """Direct access grants: Keycloak's checks in its order (client, scope, then the direct-grant flow)."""
        if not client.direct_access_grants_enabled:
            raise _oauth_error(400, "unauthorized_client", "Client not allowed for direct access grants")
        if client.consent_required:
            raise _oauth_error(400, "invalid_client", "Client requires user consent")
        scope = _token_scope(form.get("scope"))
        if scope is None:
            raise _oauth_error(400, "invalid_scope", f"Invalid scopes: {form.get('scope')}")
        username = form.get("username")
        if username is None:
            raise _oauth_error(401, "invalid_request", "Missing parameter: username")
        user = self._login_user(username)
        if user is None:
            await asyncio.to_thread(dummy_hash)
            raise _oauth_error(400, "invalid_grant", "Invalid user credentials")
        if not user.enabled:
            raise _oauth_error(400, "invalid_grant", "Account disabled")
        if not await asyncio.to_thread(check_password, form.get("password"), user.password_hash):
            raise _oauth_error(401, "invalid_grant", "Invalid user credentials")
        if user.required_actions:
            raise _oauth_error(400, "invalid_grant", "Account is not fully set up")
        session = (str(uuid.uuid4()), int(time.time()))
        return self._user_token_response(client, user, scope=scope, nonce=None, session=session)

    def _login_user(self, username: str) -> _User | None:
        """The user a login names, by email first when the realm allows it, never a service account."""
        user = None
        if self.realm.login_with_email_allowed and "@" in username and not self.realm.duplicate_emails_allowed:
            email = _normalised_email(username)
            user = next((u for u in self.realm.users.values() if email is not None and u.email == email), None)
        user = user or self.realm.user_by_username(username)
        return None if user is None or user.service_account_client_id is not None else user

    async def authorize(self, request: Request) -> Response:
        """`GET .../auth`: what cannot be answered to a verified redirect URI is an error page; the rest
        is redirected there as `error`/`error_description`; a valid request gets the login page."""
        self._oidc_realm(request)
        params = request.query_params
        client_id = params.get("client_id")
        if not client_id:
            return _error_page(400, "Missing parameters: client_id")
        client = self.realm.clients.get(client_id)
        if client is None:
            return _error_page(400, "Client not found.")
        if not client.enabled:
            return _error_page(400, "Client disabled.")
        if client.bearer_only:
            return _error_page(400, "Bearer-only applications are not allowed to initiate browser login")
        scope_param = params.get("scope")
        redirect_uri_param = params.get("redirect_uri")
        redirect_uri = _verified_redirect_uri(client, redirect_uri_param, oidc="openid" in (scope_param or "").split())
        if redirect_uri is None:
            return _error_page(400, "Invalid parameter: redirect_uri")
        state = params.get("state")
        response_mode = params.get("response_mode") or "query"

        def refuse(error: str, description: str | None = None) -> Response:
            mode = response_mode if response_mode in ("query", "fragment") else "query"
            answer = {"error": error} | ({"error_description": description} if description else {})
            return _redirect(redirect_uri, mode, answer | ({"state": state} if state else {}) | {"iss": self.issuer})

        response_type = params.get("response_type")
        if response_type is None:
            return refuse("invalid_request", "Missing parameter: response_type")
        response_types = set(response_type.split())
        if not response_types or not response_types <= {"code", "token", "id_token", "none"}:
            return refuse("unsupported_response_type")
        if response_mode not in ("query", "fragment"):  # the emulator does not do form_post or JARM
            return refuse("invalid_request", "Invalid parameter: response_mode")
        if response_types & {"code", "none"} and not client.standard_flow_enabled:
            return refuse(
                "unauthorized_client",
                "Client is not allowed to initiate browser login with given response_type. "
                "Standard flow is disabled for the client.",
            )
        if response_types & {"token", "id_token"}:
            if not client.implicit_flow_enabled:
                return refuse(
                    "unauthorized_client",
                    "Client is not allowed to initiate browser login with given response_type. "
                    "Implicit flow is disabled for the client.",
                )
            return refuse("unsupported_response_type")  # the emulator issues codes only
        if response_types != {"code"}:
            return refuse("unsupported_response_type")
        scope = _token_scope(scope_param)
        if scope is None:
            return refuse("invalid_scope", f"Invalid scopes: {scope_param}")
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        pkce_refusal = _pkce_refusal(client, challenge, method)
        if pkce_refusal is not None:
            return refuse("invalid_request", pkce_refusal)

        root = request.cookies.get(AUTH_SESSION_COOKIE) or str(uuid.uuid4())
        tab_id = secrets.token_urlsafe(16)
        self._forget_expired()
        self.pending_logins[tab_id] = _PendingLogin(
            root_session_id=root,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            redirect_uri_param=redirect_uri_param,
            response_mode=response_mode,
            state=state,
            nonce=params.get("nonce"),
            scope=scope,
            code_challenge=challenge,
            code_challenge_method=method if challenge is not None else None,
            expires_at=time.time() + self.realm.access_code_lifespan_login,
        )
        response = self._login_page(tab_id, client.client_id)
        response.set_cookie(
            AUTH_SESSION_COOKIE, root, path=f"/realms/{self.realm.name}/", httponly=True, samesite="lax"
        )
        return response

    def _login_page(self, tab_id: str, client_id: str, *, username: str = "", error: str | None = None) -> Response:
        query = urlencode({"client_id": client_id, "tab_id": tab_id})
        page = login_page(
            realm_display_name=self.realm.display_name,
            action=f"{self.issuer}/login-actions/authenticate?{query}",
            username=username,
            error=error,
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store, must-revalidate, max-age=0"})

    async def authenticate(self, request: Request) -> Response:
        """The login form posted back: a wrong password shows the form again; success redirects with a code."""
        self._oidc_realm(request)
        root = request.cookies.get(AUTH_SESSION_COOKIE)
        if root is None:
            return _error_page(400, "Cookie not found. Please make sure cookies are enabled in your browser.")
        tab_id = request.query_params.get("tab_id", "")
        pending = self.pending_logins.get(tab_id)
        if pending is not None and pending.root_session_id == root and pending.expires_at < time.time():
            del self.pending_logins[tab_id]
            pending = None
        if pending is None or pending.root_session_id != root:
            return _error_page(400, "Your login attempt timed out. Login will start from the beginning.")
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True))
        username = form.get("username", "").strip()
        user = self._login_user(username) if username else None
        if user is None:
            await asyncio.to_thread(dummy_hash)
            return self._login_page(tab_id, pending.client_id, username=username, error=INVALID_USER_MESSAGE)
        if not user.enabled:
            return self._login_page(tab_id, pending.client_id, username=username, error=ACCOUNT_DISABLED_MESSAGE)
        if not await asyncio.to_thread(check_password, form.get("password"), user.password_hash):
            return self._login_page(tab_id, pending.client_id, username=username, error=INVALID_USER_MESSAGE)
        if user.required_actions:
            # Keycloak would now show the required action's own page; the emulator stops the login here.
            message = REQUIRED_ACTION_MESSAGES.get(user.required_actions[0], "Account is not fully set up")
            return _error_page(200, message)
        del self.pending_logins[tab_id]
        code = f"{uuid.uuid4()}.{secrets.token_urlsafe(32)}"
        now = time.time()
        self.issued_codes[code] = _IssuedCode(
            client_id=pending.client_id,
            user_id=user.id,
            redirect_uri_param=pending.redirect_uri_param,
            nonce=pending.nonce,
            scope=pending.scope,
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            session_id=str(uuid.uuid4()),
            auth_time=int(now),
            expires_at=now + self.realm.access_code_lifespan,
        )
        answer = ({"state": pending.state} if pending.state else {}) | {
            "session_state": self.issued_codes[code].session_id
        }
        return _redirect(pending.redirect_uri, pending.response_mode, answer | {"iss": self.issuer, "code": code})

    def _forget_expired(self) -> None:
        now = time.time()
        for tab_id in [t for t, login in self.pending_logins.items() if login.expires_at < now]:
            del self.pending_logins[tab_id]
        for code in [c for c, issued in self.issued_codes.items() if issued.expires_at < now]:
            del self.issued_codes[code]

    def _code_grant(self, client: _Client, form: Mapping[str, str]) -> Response:
        """Exchanges a code once: Keycloak's checks in its order, PKCE last (RFC 7636 4.6)."""
        code = form.get("code")
        if code is None:
            raise _oauth_error(400, "invalid_request", "Missing parameter: code")
        issued = self.issued_codes.pop(code, None)  # the first attempt uses the code up, right or wrong
        if issued is None:
            raise _oauth_error(400, "invalid_grant", "Code not valid")
        if issued.expires_at < time.time():
            raise _oauth_error(400, "invalid_grant", "Code is expired")
        user = self.realm.users.get(issued.user_id)
        if user is None:
            raise _oauth_error(400, "invalid_grant", "User not found")
        if not user.enabled:
            raise _oauth_error(400, "invalid_grant", "User disabled")
        if issued.redirect_uri_param is not None and issued.redirect_uri_param != form.get("redirect_uri"):
            raise _oauth_error(400, "invalid_grant", "Incorrect redirect_uri")
        if client.client_id != issued.client_id:
            raise _oauth_error(400, "invalid_grant", "Auth error: Found different client_id in clientSession")
        if not client.standard_flow_enabled:
            raise _oauth_error(400, "invalid_grant", "Client not allowed to exchange code")
        verifier = form.get("code_verifier")
        if issued.code_challenge is not None and verifier is None:
            raise _oauth_error(400, "invalid_grant", "PKCE code verifier not specified")
        if issued.code_challenge is None and verifier is not None:
            raise _oauth_error(
                400, "invalid_grant", "PKCE code verifier specified but challenge not present in authorization"
            )
        if issued.code_challenge is not None and verifier is not None:
            if not valid_pkce_value(verifier):
                raise _oauth_error(400, "invalid_grant", "PKCE verification failed: Invalid code verifier")
            if not pkce_matches(verifier, issued.code_challenge, issued.code_challenge_method or "plain"):
                raise _oauth_error(400, "invalid_grant", "PKCE verification failed: Code mismatch")
        session = (issued.session_id, issued.auth_time)
        return self._user_token_response(client, user, scope=issued.scope, nonce=issued.nonce, session=session)

    def _oidc_realm(self, request: Request) -> None:
        if request.path_params["realm"] != self.realm.name:
            raise KeycloakError(404, {"error": "Realm does not exist"})

    # Admin REST API

    def _authorize(self, request: Request, allowed: frozenset[str]) -> frozenset[str]:
        """Checks the bearer token (401), the realm (404) and one of the `allowed` realm-management roles (403)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized()
        try:
            claims = jwt.decode(token, self.key, algorithms=["RS256"]).claims
            self.claims_registry.validate(claims)
        except (JoseError, ValueError):
            raise _unauthorized() from None
        if request.path_params["realm"] != self.realm.name:
            raise KeycloakError(404, {"error": "Realm not found."})
        roles = frozenset(claims.get("resource_access", {}).get(REALM_MANAGEMENT, {}).get("roles", []))
        if not roles & allowed:
            raise KeycloakError(403, {"error": "HTTP 403 Forbidden"})
        return roles

    def _user(self, request: Request) -> _User:
        user = self.realm.users.get(request.path_params["user_id"])
        if user is None:
            raise KeycloakError(404, {"error": "User not found"})
        touch(user.id)  # every change of a user reaches it by id: the save writes only these
        return user

    async def create_user(self, request: Request) -> Response:
        self._authorize(request, MANAGE_USERS)
        rep = _user_representation(await _json_body(request))
        username = rep.get("username") or ""
        if not username.strip():
            raise _error_message(400, "User name is missing")
        if self.realm.user_by_username(username) is not None:
            raise _error_message(409, "User exists with same username")
        email = _normalised_email(rep.get("email"))
        if email is not None and self.realm.email_taken(email):
            raise _error_message(409, "User exists with same email")
        user = _User(
            id=str(uuid.uuid4()),
            username=username.lower(),
            created_timestamp=rep.get("createdTimestamp") or _now_ms(),
            email=email,
            first_name=rep.get("firstName"),
            last_name=rep.get("lastName"),
            enabled=bool(rep.get("enabled")),
            email_verified=bool(rep.get("emailVerified")),
            attributes=self.realm.declared(rep.get("attributes") or {}),
            required_actions=[a for a in rep.get("requiredActions") or [] if a in REQUIRED_ACTIONS],
        )
        self.realm.users[user.id] = user
        touch(user.id)
        location = f"{self.public_url}/admin/realms/{self.realm.name}/users/{user.id}"
        return Response(status_code=201, headers={"Location": location})

    async def list_users(self, request: Request) -> Response:
        roles = self._authorize(request, QUERY_USERS)
        first = max(_int_param(request, "first") or 0, 0)
        limit = _int_param(request, "max")
        limit = DEFAULT_MAX_RESULTS if limit is None or limit < 0 else limit
        # query-users alone lists only users the caller may view through groups: none here.
        if not roles & VIEW_USERS:
            return JSONResponse([])
        found = self._matching_users(request, exact_allowed=True)
        return JSONResponse([user.representation() for user in found[first : first + limit]])

    async def count_users(self, request: Request) -> Response:
        self._authorize(request, QUERY_USERS)
        found = self._matching_users(request, exact_allowed=False)
        return JSONResponse(sum(1 for user in found if user.service_account_client_id is None))

    def _matching_users(self, request: Request, *, exact_allowed: bool) -> list[_User]:
        """Keycloak's three listing modes: `search`; field filters and `q`; or everything.

        Service accounts are listed only when field filters are given, as in Keycloak.
        """
        params = request.query_params
        users = sorted(self.realm.users.values(), key=lambda u: u.username)
        search = params.get("search")
        if search is not None:
            return [u for u in users if u.service_account_client_id is None and _search_matches(u, search.strip())]
        fields = {name: params[name] for name in ("username", "email", "firstName", "lastName") if name in params}
        attributes = _parse_q(params.get("q", ""))
        if not (fields or attributes or (exact_allowed and "exact" in params)):
            return [u for u in users if u.service_account_client_id is None]
        exact = exact_allowed and params.get("exact", "").lower() == "true"

        def matches(user: _User) -> bool:
            values = {
                "username": user.username,
                "email": user.email,
                "firstName": user.first_name,
                "lastName": user.last_name,
            }
            return all(_contains(values[name], wanted, exact=exact) for name, wanted in fields.items()) and all(
                any((v == wanted) if exact else wanted.lower() in v.lower() for v in user.attributes.get(name, []))
                for name, wanted in attributes.items()
            )

        return [u for u in users if matches(u)]

    async def get_user(self, request: Request) -> Response:
        self._authorize(request, VIEW_USERS)
        return JSONResponse(self._user(request).representation())

    async def update_user(self, request: Request) -> Response:
        """A partial update: absent or null fields keep their value; a sent map or list replaces it."""
        self._authorize(request, MANAGE_USERS)
        user = self._user(request)
        rep = _user_representation(await _json_body(request))
        username = rep.get("username")
        if username is not None and username.lower() != user.username:
            if not username.strip():
                raise _error_message(400, "User name is missing")
            if self.realm.user_by_username(username) is not None:
                raise _error_message(409, "User exists with same username")
        email = _normalised_email(rep.get("email"))
        if email is not None and self.realm.email_taken(email, by_other_than=user.id):
            raise _error_message(409, "User exists with same email")
        if username is not None:
            user.username = username.lower()
        if rep.get("email") is not None:
            user.email = email
        if rep.get("firstName") is not None:
            user.first_name = rep["firstName"]
        if rep.get("lastName") is not None:
            user.last_name = rep["lastName"]
        if rep.get("enabled") is not None:
            user.enabled = rep["enabled"]
        if rep.get("emailVerified") is not None:
            user.email_verified = rep["emailVerified"]
        if rep.get("attributes") is not None:
            user.attributes = self.realm.declared(rep["attributes"])
        if rep.get("requiredActions") is not None:
            user.required_actions = [a for a in dict.fromkeys(rep["requiredActions"]) if a in REQUIRED_ACTIONS]
        return Response(status_code=204)

    async def delete_user(self, request: Request) -> Response:
        self._authorize(request, MANAGE_USERS)
        del self.realm.users[self._user(request).id]
        return Response(status_code=204)

    async def execute_actions_email(self, request: Request) -> Response:
        """Records the e-mail instead of sending it; the checks and their order are Keycloak's."""
        self._authorize(request, MANAGE_USERS)
        user = self._user(request)
        actions = await _json_body(request)
        if actions is not None and not (isinstance(actions, list) and all(isinstance(a, str) for a in actions)):
            raise _unparsable()
        client_id = request.query_params.get("client_id")
        redirect_uri = request.query_params.get("redirect_uri")
        lifespan = _int_param(request, "lifespan")
        if user.email is None:
            raise _error_message(400, "User email missing")
        if not user.enabled:
            raise _error_message(400, "User is disabled")
        if redirect_uri is not None and client_id is None:
            raise _error_message(400, "Client id missing")
        client = self.realm.clients.get(client_id) if client_id is not None else None
        if client_id is not None and client is None and client_id not in BUILT_IN_CLIENTS:
            raise _error_message(400, "Client doesn't exist")
        if client is not None and not client.enabled:
            raise _error_message(400, "Client is not enabled")
        if redirect_uri is not None and (client is None or not client.allows_redirect(redirect_uri)):
            raise _error_message(400, "Invalid redirect uri.")
        if actions and not set(actions) <= REQUIRED_ACTIONS:
            raise _error_message(400, "Provided invalid required actions")
        self.realm.sent_emails.append(
            {
                "user_id": user.id,
                "email": user.email,
                "actions": list(actions or []),
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "lifespan": ACTION_TOKEN_LIFESPAN if lifespan is None else lifespan,
                "sent_at": _now_ms(),
            }
        )
        return Response(status_code=204)

    async def reset_password(self, request: Request) -> Response:
        """Sets the user's password (hashed); `temporary` adds UPDATE_PASSWORD, otherwise removes it."""
        self._authorize(request, MANAGE_USERS)
        user = self._user(request)
        credential = await _json_body(request)
        if credential is not None and not (
            isinstance(credential, dict)
            and credential.keys() <= CREDENTIAL_REPRESENTATION_FIELDS
            and isinstance(credential.get("value"), str | None)
            and isinstance(credential.get("temporary"), bool | None)
        ):
            raise _unparsable()
        if credential is None or credential.get("value") is None:
            raise KeycloakError(400, {"error": "No password provided"})
        if not credential["value"].strip():
            raise KeycloakError(400, {"error": "Empty password not allowed"})
        user.password_hash = await asyncio.to_thread(hash_password, credential["value"])
        actions = [a for a in user.required_actions if a != "UPDATE_PASSWORD"]
        user.required_actions = [*actions, "UPDATE_PASSWORD"] if credential.get("temporary") else actions
        return Response(status_code=204)

    async def get_role(self, request: Request) -> Response:
        self._authorize(request, VIEW_REALM)
        role = self.realm.roles.get(request.path_params["role_name"])
        if role is None:
            raise KeycloakError(404, {"error": "Could not find role"})
        return JSONResponse(role.representation(self.realm.id))

    async def realm_role_mappings(self, request: Request) -> Response:
        """Direct realm-role mappings; a role is matched by name and must carry that role's id.

        A change applies all or nothing (Keycloak rolls the transaction back); DELETE without a body
        removes every mapping.
        """
        if request.method == "GET":
            self._authorize(request, VIEW_USERS)
            user = self._user(request)
            mapped = [self.realm.roles[name] for name in sorted(user.realm_roles)]
            return JSONResponse([role.representation(self.realm.id, brief=True) for role in mapped])
        self._authorize(request, MANAGE_USERS)
        user = self._user(request)
        body = await _json_body(request)
        if body is None and request.method == "DELETE":
            user.realm_roles.clear()
            return Response(status_code=204)
        if not (isinstance(body, list) and all(isinstance(rep, dict) for rep in body)):
            raise _unparsable()
        names: set[str] = set()
        for rep in body:
            role = self.realm.roles.get(rep.get("name") or "")
            if role is None or role.id != rep.get("id"):
                raise KeycloakError(404, {"error": "Role not found"})
            names.add(role.name)
        if request.method == "POST":
            user.realm_roles |= names
        else:
            user.realm_roles -= names
        return Response(status_code=204)

    # Test support (not part of Keycloak)

    async def sent_emails(self, request: Request) -> Response:
        """Every execute-actions e-mail requested so far, oldest first."""
        return JSONResponse(self.realm.sent_emails)


async def _render_refusal(request: Request, exc: Exception) -> Response:
    refusal = exc if isinstance(exc, KeycloakError) else KeycloakError(500, {"error": "unknown_error"})
    return JSONResponse(refusal.body, status_code=refusal.status)


async def _render_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the body Keycloak gives an unknown path or method."""
    status = HTTPStatus(exc.status_code if isinstance(exc, HTTPException) else 500)
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return JSONResponse({"error": f"HTTP {status.value} {status.phrase}"}, status_code=status.value, headers=headers)


def create_app(
    *,
    realm_export: Mapping[str, Any] | str | Path,
    public_url: str,
    dev_clients: Mapping[str, Any] | str | Path | None = DEV_CLIENTS_FILE,
    state_dir: Path | None = None,
) -> ASGIApp:
    """The emulator as an ASGI app, seeded from a realm export (a parsed dict or a JSON file path).

    `public_url` is the base URL clients reach it by: it makes the token issuer
    (`{public_url}/realms/{realm}`) and the `Location` of created users, so it must match what the
    API is configured to trust. A fresh RSA signing key is generated per app. `dev_clients` adds the
    clients of a partial export of the same realm (default: the development-only clients); None
    serves the realm export alone. With `state_dir` the users, the signing key and the sent e-mails
    are loaded from there and every change is saved there before it is answered.
    """
    export = _with_dev_clients(_read_export(realm_export), None if dev_clients is None else _read_export(dev_clients))
    realm = _load_realm(export)
    stored = RealmStore(state_dir, _User)
    stored.load_users(realm.users)
    stored.load_sent_emails(realm.sent_emails)
    emulator = _Emulator(realm, public_url)
    emulator.key = stored.signing_key(emulator.key)
    app = Starlette(exception_handlers={KeycloakError: _render_refusal, HTTPException: _render_http_error})
    latency = InjectedLatency(app, prefixes=("/admin/",))
    app.router.routes.extend([latency.route(), *emulator.routes()])
    if state_dir is None:
        return latency  # the Starlette app, behind the latency switch
    return SaveBeforeAnswering(latency, lambda touched: stored.save(realm.users, realm.sent_emails, touched=touched))


def _read_export(source: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    return source if isinstance(source, Mapping) else json.loads(Path(source).read_text(encoding="utf-8"))


def _with_dev_clients(export: Mapping[str, Any], extra: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The realm export with the clients of `extra` added, the service-account users of those clients (their
    realm roles) and dev compliance officers; anything else in `extra` is refused."""
    if extra is None:
        return export
    if extra.get("realm") != export["realm"] or not set(extra) <= {"realm", "clients", "users"}:
        raise ValueError(
            f"dev clients must be {{realm: {export['realm']!r}, clients: [...], users: [...]}}, got {sorted(extra)}"
        )
    known = {client["clientId"] for client in export.get("clients", [])}
    added = {client["clientId"] for client in extra.get("clients", [])}
    clashing = sorted(known & added)
    if clashing:
        raise ValueError(f"dev clients {clashing} are already in the realm export")
    # A dev client's own service account, or a dev compliance officer (a person: the realm role compliance only,
    # signing in through the production realm's compliance-console); service accounts of production clients and
    # other people stay out.
    strays = sorted(
        u.get("username", "?")
        for u in extra.get("users", [])
        if u.get("serviceAccountClientId") not in added
        and not ("serviceAccountClientId" not in u and set(u.get("realmRoles", [])) == {"compliance"})
    )
    if strays:
        raise ValueError(f"dev users {strays} are neither service accounts of dev clients nor compliance officers")
    return {
        **export,
        "clients": [*export.get("clients", []), *extra.get("clients", [])],
        "users": [*export.get("users", []), *extra.get("users", [])],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Serves the emulator with uvicorn until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m dev.emulators.keycloak", description="Serve the Keycloak emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--public-url", help="base URL clients use (token issuer, Location headers); default http://HOST:PORT"
    )
    parser.add_argument("--realm-file", type=Path, default=DEFAULT_REALM_FILE, help="realm export JSON to seed from")
    parser.add_argument(
        "--no-dev-clients",
        action="store_true",
        help=f"leave out the development-only clients ({DEV_CLIENTS_FILE.name})",
    )
    parser.add_argument(
        "--state-dir", type=Path, help="keep users, the signing key and sent e-mails here across restarts"
    )
    args = parser.parse_args(argv)
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    settings = get_settings()
    # Our logging (JSON, redacted), not uvicorn's access log: admin queries carry e-mails in the URL.
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    dev_clients = None if args.no_dev_clients else DEV_CLIENTS_FILE
    app = create_app(
        realm_export=args.realm_file, public_url=public_url, dev_clients=dev_clients, state_dir=args.state_dir
    )
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
