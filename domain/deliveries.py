"""Pushing published events to subscribers' webhooks: which addresses may receive them, and what an
attempt's outcome means for the delivery and for its subscription.

A delivery is retried on a schedule (by default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h after each failed
attempt), then dead-lettered; a subscription whose endpoint has failed continuously (no success at all)
for a while (5 days) is disabled. Addresses: private, loopback, link-local (cloud metadata endpoints) and
other special ranges are refused unless a network is explicitly allowed; plain http only where allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_URL_LENGTH = 2000


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"  # not attempted yet (or replayed)
    RETRYING = "RETRYING"  # failed, next attempt scheduled
    DELIVERED = "DELIVERED"  # a 2xx answer
    DEAD = "DEAD"  # the schedule is spent: dead-lettered, until ops replay it


DUE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


@dataclass(frozen=True)
class Attempt:
    """One try to deliver an event, as ops see it."""

    attempted_at: datetime
    status_code: int | None  # None: no HTTP answer (timeout, refused connection, address not allowed)
    latency_ms: int
    response_head: str  # the first bytes of the answer
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class NextAttempt:
    status: DeliveryStatus
    at: datetime | None  # when the next attempt is due; None: no more attempts


def after_attempt(*, succeeded: bool, round_attempts: int, now: datetime, schedule: Sequence[timedelta]) -> NextAttempt:
    """What follows an attempt; `round_attempts` counts it (attempts since the delivery was created or replayed)."""
    if succeeded:
        return NextAttempt(DeliveryStatus.DELIVERED, None)
    if round_attempts <= len(schedule):
        return NextAttempt(DeliveryStatus.RETRYING, now + schedule[round_attempts - 1])
    return NextAttempt(DeliveryStatus.DEAD, None)


def should_disable(*, failing_since: datetime | None, now: datetime, after: timedelta) -> bool:
    """An endpoint that has not answered one attempt with 2xx since `failing_since`, for `after` or longer."""
    return failing_since is not None and now - failing_since >= after


@dataclass(frozen=True)
class UrlPolicy:
    allow_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, *, allow_http: bool, allowed_networks: str) -> UrlPolicy:
        networks = tuple(ipaddress.ip_network(n.strip()) for n in allowed_networks.split(",") if n.strip())
        return cls(allow_http=allow_http, allowed_networks=networks)


def url_refusal(url: str, policy: UrlPolicy) -> str | None:
    """Why this URL may not be subscribed (its form; its addresses are `address_refusal`), or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("https", "http"):
        return "must be an https URL"
    if parts.scheme == "http" and not policy.allow_http:
        return "must be https (plain http is allowed only where EVENT_WEBHOOK_ALLOW_HTTP is set)"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.fragment:
        return "must not have a fragment"
    return None


def address_refusal(address: IPAddress, policy: UrlPolicy) -> str | None:
    """Why an endpoint at this address may not be called, or None. An explicitly allowed network wins."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in policy.allowed_networks):
        return None
    for refused, what in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (cloud metadata endpoints live there)"),
        (address.is_unspecified, "unspecified"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not a public address"),
    ):
        if refused:
            return f"{address} is {what}; allow its network in EVENT_WEBHOOK_ALLOWED_NETWORKS to use it"
    return None
