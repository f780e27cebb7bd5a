"""What the Keycloak emulator needs for customers' own logins, apart from its state: password hashes,
PKCE, OAuth scopes and the login and error pages (spec/keycloak.md, "Customers' own logins").

The checks and messages follow Keycloak 26 (AuthorizationEndpointChecker, PkceUtils, the direct-grant
authenticators and the login theme's messages); the pages are minimal HTML with the element ids of
Keycloak's own theme (`kc-form-login`, `username`, `password`, `kc-login`, `input-error`,
`kc-error-message`), so a test drives them as a browser would: read the form, post it back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets

__all__ = [
    "DEFAULT_SCOPES",
    "OPTIONAL_SCOPES",
    "check_password",
    "dummy_hash",
    "error_page",
    "hash_password",
    "login_page",
    "pkce_matches",
    "valid_pkce_value",
]

# scrypt with the cost Python's documentation names as a minimum for interactive logins.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_DUMMY_SALT = secrets.token_bytes(16)

# A new realm's client scopes: the default ones every token gets, and the optional ones a client may
# request. `openid` is not a client scope but the marker of an OpenID Connect request.
DEFAULT_SCOPES = ("profile", "email", "roles", "web-origins", "acr", "basic")
OPTIONAL_SCOPES = ("address", "phone", "microprofile-jwt", "organization")
_PKCE_VALUE = re.compile(r"^[0-9a-zA-Z\-._~]{43,128}$")  # RFC 7636 4.1/4.2, as Keycloak checks both


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash`, salt and hash base64; the emulator never stores a password itself."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return "$".join(["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)])


def check_password(password: str | None, stored: str | None) -> bool:
    """Whether `password` matches the stored hash; no password or no hash never matches (in constant time)."""
    if stored is None or password is None:
        dummy_hash()
        return False
    scheme, n, r, p, salt, expected = stored.split("$")
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(digest, _unb64(expected))


def dummy_hash() -> None:
    """Spends the time a password check takes, so an unknown user answers as slowly as a known one."""
    hashlib.scrypt(b"", salt=_DUMMY_SALT, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)


def valid_pkce_value(value: str) -> bool:
    """A code challenge or verifier as RFC 7636 allows it: 43-128 unreserved characters."""
    return _PKCE_VALUE.fullmatch(value) is not None


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    """RFC 7636 4.6: S256 compares BASE64URL(SHA256(verifier)) with the challenge, plain compares them."""
    if method == "S256":
        encoded = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
    elif method == "plain":
        encoded = verifier
    else:
        return False
    return hmac.compare_digest(encoded, challenge)


def login_page(*, realm_display_name: str, action: str, username: str = "", error: str | None = None) -> str:
    """The username/password form; `action` is where the browser posts it back."""
    alert = f'<div class="alert-error"><span id="input-error">{html.escape(error)}</span></div>' if error else ""
    return _page(
        f"Sign in to {realm_display_name}",
        f"""<h1 id="kc-page-title">Sign in to your account</h1>
{alert}
<form id="kc-form-login" action="{html.escape(action)}" method="post">
  <label for="username">Username or email</label>
  <input id="username" name="username" type="text" value="{html.escape(username)}" autocomplete="username" autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password">
  <input type="hidden" id="id-hidden-input" name="credentialId">
  <input type="submit" id="kc-login" name="login" value="Sign In">
</form>""",
    )


def error_page(message: str) -> str:
    """Keycloak's "We are sorry..." page, for what cannot be sent back to the client's redirect URI."""
    return _page(
        "We are sorry...",
        f"""<h1 id="kc-page-title">We are sorry...</h1>
<p id="kc-error-message" class="instruction">{html.escape(message)}</p>""",
    )


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="robots" content="noindex, nofollow"><title>{html.escape(title)}</title></head>
<body>
{body}
</body>
</html>
"""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
