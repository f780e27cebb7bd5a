"""The delivery rules without I/O: the retry schedule, dead-lettering, disabling, and which endpoints may
receive events (the URL's form and the addresses its host has)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from domain.deliveries import (
    DEFAULT_RETRY_SCHEDULE,
    DeliveryStatus,
    UrlPolicy,
    address_refusal,
    after_attempt,
    should_disable,
    url_refusal,
)
from integrations.event_webhooks import sign
from kit.settings import Settings

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
PRODUCTION = UrlPolicy()
DEV = UrlPolicy.parse(allow_http=True, allowed_networks="127.0.0.0/8,::1/128")


def test_a_failed_delivery_follows_the_schedule_then_is_dead_lettered() -> None:
    waits = [
        after_attempt(succeeded=False, round_attempts=n, now=NOW, schedule=DEFAULT_RETRY_SCHEDULE)
        for n in range(1, len(DEFAULT_RETRY_SCHEDULE) + 2)
    ]
    assert [w.at - NOW for w in waits[:-1] if w.at] == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ]
    assert {w.status for w in waits[:-1]} == {DeliveryStatus.RETRYING}
    assert waits[-1].status is DeliveryStatus.DEAD and waits[-1].at is None  # the eighth attempt was the last
    assert after_attempt(succeeded=True, round_attempts=3, now=NOW, schedule=()).status is DeliveryStatus.DELIVERED


def test_an_endpoint_failing_for_five_days_is_disabled() -> None:
    five_days = timedelta(days=5)
    assert not should_disable(failing_since=None, now=NOW, after=five_days)
    assert not should_disable(failing_since=NOW - five_days + timedelta(minutes=1), now=NOW, after=five_days)
    assert should_disable(failing_since=NOW - five_days, now=NOW, after=five_days)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://receiver.example.com/hook", "must be https"),
        ("ftp://receiver.example.com/hook", "must be an https URL"),
        ("https:///hook", "has no host"),
        ("https://user:pw@receiver.example.com/hook", "credentials"),
        ("https://receiver.example.com:99999/hook", "not a URL"),
        ("https://receiver.example.com/" + "a" * 2000, "at most"),
    ],
)
def test_production_urls_are_https_with_a_host_and_no_credentials(url: str, why: str) -> None:
    refusal = url_refusal(url, PRODUCTION)
    assert refusal is not None and why in refusal
    assert url_refusal("https://receiver.example.com/hook", PRODUCTION) is None


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("169.254.169.254", "link-local"),  # AWS, GCP and Azure metadata
        ("fe80::1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),  # an IPv4-mapped address is the IPv4 address
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
    ],
)
def test_special_addresses_are_refused_unless_their_network_is_allowed(address: str, what: str) -> None:
    refusal = address_refusal(ipaddress.ip_address(address), PRODUCTION)
    assert refusal is not None and what in refusal
    assert address_refusal(ipaddress.ip_address("93.184.215.14"), PRODUCTION) is None


def test_the_dev_stack_allows_loopback_and_http_but_never_link_local() -> None:
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), DEV) is None
    assert url_refusal("http://127.0.0.1:9000/hook", DEV) is None
    assert "link-local" in (address_refusal(ipaddress.ip_address("169.254.169.254"), DEV) or "")


def test_a_signature_made_with_two_secrets_verifies_with_either_and_nothing_else() -> None:
    old, new = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    now = datetime.now(UTC)
    body = '{"type":"customer.activated"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(message_id="msg_1", timestamp=now, body=body, secrets=[new, old]),
    }
    assert Webhook(new).verify(body, headers) == {"type": "customer.activated"}
    assert Webhook(old).verify(body, headers) == {"type": "customer.activated"}
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "dGhpcyBpcyBub3QgdGhlIHNlY3JldA==").verify(body, headers)


@pytest.mark.parametrize(
    ("setting", "value", "why"),
    [
        ("event_webhook_allowed_networks", "10.0.0.0/33", "does not appear to be an IPv4 or IPv6 network"),
        ("event_delivery_retry_schedule", [5, 0], "every wait must be positive"),
    ],
)
def test_a_bad_delivery_setting_stops_the_start_and_says_which(setting: str, value: object, why: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**{setting: value})
    assert setting in str(refused.value) and why in str(refused.value)
