"""Sending one published event to a subscriber's endpoint, signed per Standard Webhooks.

The body is the event in CloudEvents structured JSON; `webhook-id` is the event's id (the receiver's dedupe
key, the same on every retry and replay), `webhook-timestamp` the attempt's time, and `webhook-signature`
one `v1,` HMAC per valid secret (two while a rotated-out secret's grace period lasts), made by the
`standardwebhooks` library so any of its implementations verifies them.

Every address the host resolves to is checked before each attempt (not only when the subscription was
made: DNS may change); a redirect is an answer, never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from domain.deliveries import Attempt, UrlPolicy, address_refusal, url_refusal

RESPONSE_HEAD_BYTES = 256
USER_AGENT = "customer-lifecycle-webhooks/1"


def sign(*, message_id: str, timestamp: datetime, body: str, secrets: Sequence[str]) -> str:
    """The `webhook-signature` header: space-separated signatures, one per secret."""
    return " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in secrets)


async def endpoint_refusal(url: str, policy: UrlPolicy) -> str | None:
    """Why this URL may not receive events now (its form, or an address its host resolves to), or None."""
    if (why := url_refusal(url, policy)) is not None:
        return why
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError):
            return f"the host {host!r} does not resolve"
        addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    for address in addresses:
        if (why := address_refusal(address, policy)) is not None:
            return why
    return None


class WebhookSender:
    """One HTTP client for every endpoint: no redirects, no cookies, a total deadline per attempt."""

    def __init__(self, policy: UrlPolicy, *, timeout: float) -> None:
        self._policy = policy
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, url: str, *, message_id: str, body: str, secrets: Sequence[str], now: datetime) -> Attempt:
        started = time.monotonic()

        def attempt(status_code: int | None = None, head: str = "", error: str | None = None) -> Attempt:
            latency = round((time.monotonic() - started) * 1000)
            return Attempt(now, status_code, latency, head, error)

        if (why := await endpoint_refusal(url, self._policy)) is not None:
            return attempt(error=f"refused: {why}")
        headers = {
            "Content-Type": "application/cloudevents+json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(message_id=message_id, timestamp=now, body=body, secrets=secrets),
        }
        try:
            async with asyncio.timeout(self._timeout):
                async with self._http.stream("POST", url, content=body.encode(), headers=headers) as response:
                    head = b""
                    async for chunk in response.aiter_raw():
                        head += chunk
                        if len(head) >= RESPONSE_HEAD_BYTES:
                            break
        except TimeoutError:
            return attempt(error=f"no answer within {self._timeout:g} s")
        except httpx.HTTPError as exc:
            return attempt(error=f"{type(exc).__name__}: {exc}"[:500])
        text = head[:RESPONSE_HEAD_BYTES].decode("utf-8", errors="replace")
        location = response.headers.get("location")
        error = None
        if response.is_redirect:
            error = f"redirect to {location!r} not followed" if location else "redirect not followed"
        elif not response.is_success:
            error = f"HTTP {response.status_code}"
        return attempt(response.status_code, text, error)
