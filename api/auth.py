"""Keycloak access tokens, verified locally with joserfc against the realm's JWKS.

RS256 only; key chosen by `kid` from a cached JWKS that is refetched (at most every few seconds) when a
token names a key we have not seen; `iss` exact; `exp`/`nbf` with a small leeway; our audience in
`aud` or as `azp`.

Roles come from `realm_access.roles`: `portal` (the portal's server), `ops` (operations staff) and
`customer` (a customer's own login, whose `customer_id` claim names the customer; see `Principal`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import Response

from api.errors import error_response

LEEWAY_SECONDS = 30
JWKS_REFRESH_MIN_INTERVAL = 5.0
VERIFIED_CACHE_SIZE = 10_000
CUSTOMER_ROLE = "customer"  # the realm role of a customer's own Keycloak user


class AuthenticationError(Exception):
    """No token, or a token we do not accept: the caller gets 401."""


class IssuerUnavailable(AuthenticationError):
    """The issuer's signing keys cannot be fetched (Keycloak is down) and none are known yet: the token
    cannot be judged, so the caller gets 503 and retries, rather than a 401 that says the token is bad."""


@dataclass(frozen=True)
class Principal:
    """Who is calling, as far as the token says."""

    subject: str
    client_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    customer_id: str | None = None  # the token's `customer_id` claim, as sent

    @property
    def actor(self) -> str:
        """Who the audit trail names for a change: the calling client, else the token's subject."""
        return self.client_id or self.subject

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def own_customer_id(self) -> str | None:
        """The customer this token speaks for: only a customer's token (realm role `customer`) has one,
        named by its `customer_id` claim (a UUID; the worker sets it as the user's attribute, which only
        an admin may edit, and the client's protocol mapper copies it into the token)."""
        if not self.has_role(CUSTOMER_ROLE) or self.customer_id is None:
            return None
        try:
            return str(uuid.UUID(self.customer_id))
        except ValueError:
            return None


ANONYMOUS = Principal(subject="anonymous", client_id=None)


class TokenVerifier:
    def __init__(self, *, issuer: str, audience: str, http: httpx.AsyncClient) -> None:
        self._issuer = issuer
        self._audience = audience
        self._http = http
        self._jwks_url = f"{issuer}/protocol/openid-connect/certs"
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        # Callers send the same token many times: remember each verified one until it expires.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def _key_set(self, kid: str | None) -> KeySet:
        known = self._keys is not None and any(key.kid == kid for key in self._keys.keys)
        if known:
            assert self._keys is not None
            return self._keys
        async with self._lock:
            # An unknown kid may be a rotated key: refetch, but not more often than the minimum interval.
            if self._keys is None or time.monotonic() - self._fetched_at >= JWKS_REFRESH_MIN_INTERVAL:
                # A failed attempt counts too: an unreachable JWKS is not asked again on every request.
                self._fetched_at = time.monotonic()
                try:
                    response = await self._http.get(self._jwks_url, timeout=5.0)
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    if self._keys is None:
                        raise IssuerUnavailable("cannot fetch the issuer's signing keys; retry") from exc
                else:
                    signing = [k for k in response.json().get("keys", []) if k.get("use", "sig") == "sig"]
                    self._keys = KeySet.import_key_set({"keys": signing})
        assert self._keys is not None
        return self._keys

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[1]:
            self._verified.move_to_end(token)
            return cached[0]
        principal, expires_at = await self._verify(token)
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = _header(token)
            if header.get("alg") != "RS256":
                raise AuthenticationError("only RS256 tokens are accepted")
            keys = await self._key_set(header.get("kid"))
            decoded = jwt.decode(token, keys, algorithms=["RS256"])
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY_SECONDS,
                iss={"essential": True, "value": self._issuer},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except JoseError as exc:
            raise AuthenticationError(f"invalid token: {exc.error}") from exc
        except ValueError as exc:
            raise AuthenticationError("malformed token") from exc
        claims = decoded.claims
        audiences = claims.get("aud") or []
        if isinstance(audiences, str):
            audiences = [audiences]
        if self._audience not in audiences and claims.get("azp") != self._audience:
            raise AuthenticationError("token is not meant for this API")
        roles = set((claims.get("realm_access") or {}).get("roles") or [])
        principal = Principal(
            subject=str(claims["sub"]),
            client_id=claims.get("azp"),
            roles=frozenset(roles),
            customer_id=customer_id if isinstance(customer_id := claims.get("customer_id"), str) else None,
        )
        return principal, float(claims["exp"]) + LEEWAY_SECONDS


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read before choosing a key (the signature is checked after)."""
    obj = jws.extract_compact(token.encode())
    return dict(obj.protected)


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None for any other scheme or an empty token."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authorize(request: Request, verifier: TokenVerifier, role: str, *, what: str) -> Principal | Response:
    """For the plain HTTP endpoints: the caller, or the answer refusing it (401 without a valid bearer
    token, 503 while the issuer's keys cannot be fetched, 403 without `role`)."""
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None:
        return error_response(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    try:
        principal = await verifier.verify(token)
    except IssuerUnavailable as exc:
        return error_response(503, str(exc), {"Retry-After": "5"})
    except AuthenticationError as exc:
        return error_response(401, str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if not principal.has_role(role):
        return error_response(403, f"{what} needs the {role} role")
    return principal
