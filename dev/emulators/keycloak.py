"""A Keycloak emulator: the subset of Keycloak 26 our Keycloak contract (spec/keycloak.md) describes.

No Keycloak server can be installed on the development machines, so the dev stack and the tests talk
to this instead. It is seeded from the same realm export the real Keycloak imports (clients, secrets,
roles, service-account grants, protocol mappers, the declared user profile), keeps its state in memory,
and answers with Keycloak's own status codes and JSON bodies, so client code exercised here meets the
same responses in production.

Known simplifications: only the client_credentials grant; no default roles (`default-roles-<realm>`,
`offline_access`) and no `account` audience in tokens; no user-profile validators beyond dropping
undeclared attributes; admin permissions are read from the token's `realm-management` roles.

Run it with `python -m dev.emulators.keycloak --port 8080`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
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
from urllib.parse import parse_qsl, unquote

import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from dev.emulators.latency import InjectedLatency
from kit.logging import configure_logging
from kit.settings import get_settings

__all__ = ["DEFAULT_REALM_FILE", "create_app", "main"]

DEFAULT_REALM_FILE = Path(__file__).resolve().parents[2] / "deploy" / "realm-customers.json"
DEFAULT_ACCESS_TOKEN_LIFESPAN = 300
DEFAULT_MAX_RESULTS = 100  # Keycloak's Constants.DEFAULT_MAX_RESULTS for user listings
ACTION_TOKEN_LIFESPAN = 12 * 3600  # realm default for admin-generated action tokens
TOKEN_SCOPE = "profile email"

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
        if config.get("access.token.claim", "true") != "true":
            continue
        if mapper.get("protocolMapper") == "oidc-audience-mapper":
            audience = config.get("included.custom.audience") or config.get("included.client.audience")
            if audience:
                audiences.append(audience)
        elif mapper.get("protocolMapper") == "oidc-usermodel-attribute-mapper":
            multivalued = config.get("multivalued") == "true"
            claims.append(_AttributeClaim(config["user.attribute"], config["claim.name"], multivalued))
    return _Client(
        client_id=rep["clientId"],
        secret=rep.get("secret"),
        public=rep.get("publicClient", False),
        enabled=rep.get("enabled", True),
        service_accounts_enabled=rep.get("serviceAccountsEnabled", False),
        redirect_uris=tuple(rep.get("redirectUris", [])),
        audiences=tuple(dict.fromkeys(audiences)),
        attribute_claims=tuple(claims),
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

    def routes(self) -> list[Route]:
        oidc = "/realms/{realm}/protocol/openid-connect"
        users = "/admin/realms/{realm}/users"
        return [
            Route("/realms/{realm}/.well-known/openid-configuration", self.discovery, methods=["GET"]),
            Route(f"{oidc}/certs", self.certs, methods=["GET"]),
            Route(f"{oidc}/token", self.token, methods=["POST"]),
            Route(users, self.list_users, methods=["GET"]),
            Route(users, self.create_user, methods=["POST"]),
            Route(f"{users}/count", self.count_users, methods=["GET"]),
            Route(f"{users}/{{user_id}}", self.get_user, methods=["GET"]),
            Route(f"{users}/{{user_id}}", self.update_user, methods=["PUT"]),
            Route(f"{users}/{{user_id}}", self.delete_user, methods=["DELETE"]),
            Route(f"{users}/{{user_id}}/execute-actions-email", self.execute_actions_email, methods=["PUT"]),
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
                # What the real realm offers; the emulator itself serves only client_credentials.
                "grant_types_supported": ["authorization_code", "refresh_token", "password", "client_credentials"],
                "response_types_supported": ["code", "none", "id_token", "token", "id_token token", "code id_token"],
                "subject_types_supported": ["public", "pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["openid", "profile", "email", "roles", "web-origins", "acr", "basic"],
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
        if grant_type != "client_credentials":
            raise _oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")
        client = self._authenticate_client(request, form)
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

    def _access_token(self, client: _Client, user: _User) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + self.realm.access_token_lifespan,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
        }
        if client.audiences:
            claims["aud"] = client.audiences[0] if len(client.audiences) == 1 else list(client.audiences)
        claims |= {"sub": user.id, "typ": "Bearer", "azp": client.client_id, "acr": "1"}
        if user.realm_roles:
            claims["realm_access"] = {"roles": sorted(user.realm_roles)}
        resource_access = {name: {"roles": sorted(roles)} for name, roles in sorted(user.client_roles.items()) if roles}
        if resource_access:
            claims["resource_access"] = resource_access
        claims |= {
            "scope": TOKEN_SCOPE,
            "client_id": client.client_id,
            "email_verified": user.email_verified,
            "preferred_username": user.username,
        }
        if user.email is not None:
            claims["email"] = user.email
        for mapping in client.attribute_claims:
            values = user.attributes.get(mapping.attribute)
            if values:
                claims[mapping.claim] = list(values) if mapping.multivalued else values[0]
        return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": self.key.kid}, claims, self.key)

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


def create_app(*, realm_export: Mapping[str, Any] | str | Path, public_url: str) -> ASGIApp:
    """The emulator as an ASGI app, seeded from a realm export (a parsed dict or a JSON file path).

    `public_url` is the base URL clients reach it by: it makes the token issuer
    (`{public_url}/realms/{realm}`) and the `Location` of created users, so it must match what the
    API is configured to trust. A fresh RSA signing key is generated per app.
    """
    export: Mapping[str, Any] = (
        realm_export
        if isinstance(realm_export, Mapping)
        else json.loads(Path(realm_export).read_text(encoding="utf-8"))
    )
    emulator = _Emulator(_load_realm(export), public_url)
    app = Starlette(exception_handlers={KeycloakError: _render_refusal, HTTPException: _render_http_error})
    latency = InjectedLatency(app, prefixes=("/admin/",))
    app.router.routes.extend([latency.route(), *emulator.routes()])
    return latency  # the Starlette app, behind the latency switch


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
    args = parser.parse_args(argv)
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    settings = get_settings()
    # Our logging (JSON, redacted), not uvicorn's access log: admin queries carry e-mails in the URL.
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    app = create_app(realm_export=args.realm_file, public_url=public_url)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
