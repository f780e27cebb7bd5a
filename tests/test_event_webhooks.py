"""Lifecycle events pushed to webhook subscribers, through the real stack and a real HTTP receiver here
that verifies every request with the `standardwebhooks` library, as a bank's system would.

Covered: a customer's whole life arrives verified in per-customer sequence order; a receiver down then up
loses nothing; SIGKILLed workers change no id and lose no event; a hanging endpoint does not hold up a
healthy one; replays carry the same ids; forged, re-signed and stale requests are what the receiver
rejects; rotation signs with both secrets; a dead endpoint is dead-lettered, then disabled; link-local
and unknown types are refused. The stack's retry schedule is short (conftest) so retries happen in seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dev.stack import DevStack
from integrations.event_webhooks import sign
from tests.helpers import free_port, running_app
from tests.support.graphql import finish_onboarding, graphql, press, register, wait_for_stage

CREATE = """
mutation($input: EventSubscriptionCreateInput!) {
  eventSubscriptionCreate(input: $input) { subscription { id url eventTypes enabled } secret }
}"""
UPDATE = """
mutation($input: EventSubscriptionUpdateInput!) {
  eventSubscriptionUpdate(input: $input) { subscription { id enabled disabledReason eventTypes } }
}"""
DELETE = "mutation($id: ID!) { eventSubscriptionDelete(input: {id: $id}) { id } }"
ROTATE = """
mutation($id: ID!) {
  eventSubscriptionSecretRotate(input: {id: $id}) { secret subscription { previousSecretValidUntil } }
}"""
DELIVERIES = """
query($id: ID!, $status: EventDeliveryStatus) {
  eventDeliveries(subscriptionId: $id, status: $status, first: 200) {
    id eventId eventType customerId sequence status attemptCount nextAttemptAt deliveredAt
    attempts { attemptedAt statusCode latencyMs responseHead error }
  }
}"""
REPLAY = """
mutation($input: EventDeliveryReplayInput!) {
  eventDeliveryReplay(input: $input) { replayed delivery { id status attemptCount } }
}"""
SUSPEND = 'mutation($id: ID!) { customerSuspend(input: {customerId: $id, reason: "check"}) { customer { id } } }'
REACTIVATE = "mutation($id: ID!) { customerReactivate(input: {customerId: $id}) { customer { id } } }"
CLOSE = 'mutation($id: ID!) { customerClose(input: {customerId: $id, reason: "request"}) { customer { id } } }'
ONBOARDING = [
    "customer.registered",
    "customer.kyc_started",
    "customer.kyc_submitted",
    "customer.kyc_approved",
    "customer.activated",
]
LIFE = [*ONBOARDING, "customer.suspended", "customer.reactivated", "customer.closed"]


@dataclass
class Received:
    at: datetime
    headers: dict[str, str]
    body: bytes
    event: dict[str, Any]


@dataclass
class Receiver:
    """A subscriber's endpoint: verifies each request (401 when it does not verify), then keeps it."""

    secret: str = ""
    mode: str = "ok"  # ok: 204; fail: 500; hang: never answers
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends the hanging (before the server stops)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if self.mode == "hang":
            await self.released.wait()
            return Response("too late", status_code=503)
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.rejected.append(str(exc))
            return Response(f"rejected: {exc}", status_code=401)
        self.received.append(Received(datetime.now(UTC), dict(request.headers), body, event))
        if self.mode == "fail":
            return Response("receiver broken", status_code=500)
        return Response(status_code=204)

    def of(self, customer_id: str) -> list[dict[str, Any]]:
        return [r.event for r in self.received if r.event["subject"] == customer_id]

    async def at_least(self, customer_id: str, count: int) -> list[dict[str, Any]] | None:
        """The customer's events so far, once there are `count` of them (for `eventually`)."""
        events = self.of(customer_id)
        return events if len(events) >= count else None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.endpoint, methods=["POST"])])


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.1)


async def subscribe(ops: httpx.AsyncClient, url: str, event_types: list[str] | None = None) -> tuple[str, str]:
    body = await graphql(ops, CREATE, {"input": {"url": url, "eventTypes": event_types or [], "description": "test"}})
    assert "errors" not in body, body
    created = body["data"]["eventSubscriptionCreate"]
    assert created["secret"].startswith("whsec_") and created["subscription"]["enabled"] is True
    return created["subscription"]["id"], created["secret"]


@pytest.fixture
async def subscriptions(ops: httpx.AsyncClient) -> AsyncIterator[list[str]]:
    """Subscriptions a test makes; deleted after it, so no later test's events are pushed to them."""
    made: list[str] = []
    yield made
    for subscription_id in made:
        await graphql(ops, DELETE, {"id": subscription_id})


async def receiving(
    ops: httpx.AsyncClient, made: list[str], event_types: list[str] | None = None, *, mode: str = "ok"
) -> tuple[str, Receiver, Callable[[], Any]]:
    """A subscription to a receiver on a port of its own; returns its id, the receiver and its server."""
    port = free_port()
    subscription_id, secret = await subscribe(ops, f"http://127.0.0.1:{port}/hook", event_types)
    made.append(subscription_id)
    receiver = Receiver(secret=secret, mode=mode)
    return subscription_id, receiver, lambda: running_app(receiver.app(), port)


async def deliveries(ops: httpx.AsyncClient, subscription_id: str, status: str | None = None) -> list[dict[str, Any]]:
    body = await graphql(ops, DELIVERIES, {"id": subscription_id, "status": status})
    assert "errors" not in body, body
    result: list[dict[str, Any]] = body["data"]["eventDeliveries"]
    return result


async def outbox_ids(database: asyncpg.Pool, customer_id: str) -> list[str]:
    rows = await database.fetch("SELECT id FROM lifecycle_events WHERE customer_id = $1 ORDER BY sequence", customer_id)
    return [str(row["id"]) for row in rows]


async def test_a_customers_life_arrives_verified_in_sequence_order(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient, database: asyncpg.Pool, subscriptions: list[str]
) -> None:
    subscription_id, receiver, serve = await receiving(ops, subscriptions)
    _, activations, serve_activations = await receiving(ops, subscriptions, ["customer.activated"])
    async with serve(), serve_activations():
        customer = await register(portal, f"push.{uuid.uuid4().hex[:8]}@example.com", "PRIVATE_COMPANY")
        customer = await finish_onboarding(portal, customer["id"])
        for mutation in (SUSPEND, REACTIVATE, CLOSE):
            assert "errors" not in await graphql(ops, mutation, {"id": customer["id"]})

        ours = await eventually(lambda: receiver.at_least(customer["id"], len(LIFE)), what="the customer's life")
        assert [e["type"] for e in ours] == LIFE  # in the order they arrived
        assert [e["sequence"] for e in ours] == list(range(1, len(LIFE) + 1))
        assert [e["id"] for e in ours] == await outbox_ids(database, customer["id"])  # the feed's ids
        ours_received = [r for r in receiver.received if r.event["subject"] == customer["id"]]
        assert all(r.headers["webhook-id"] == r.event["id"] for r in ours_received)
        assert all(r.headers["content-type"] == "application/cloudevents+json" for r in ours_received)
        activated = ours[LIFE.index("customer.activated")]
        assert activated["data"]["depositAccount"]["id"] == customer["depositAccount"]["id"]
        assert "push." not in json.dumps(ours)  # no personal data

        only = await eventually(lambda: activations.at_least(customer["id"], 1), what="the activation")
        assert [e["type"] for e in only] == ["customer.activated"]  # a subscription gets only its types

    delivered = [d for d in await deliveries(ops, subscription_id) if d["customerId"] == customer["id"]]
    assert len(delivered) == len(LIFE) and {d["status"] for d in delivered} == {"DELIVERED"}
    attempt = delivered[0]["attempts"][0]
    assert attempt["statusCode"] == 204 and attempt["latencyMs"] >= 0 and attempt["error"] is None
    async with httpx.AsyncClient() as http:  # and the worker counts them
        exposition = (await http.get(stack.worker_business_metrics_url)).text
    counted = [
        line
        for line in exposition.splitlines()
        if line.startswith('event_delivery_attempts_total{outcome="delivered"}')
    ]
    assert counted and float(counted[0].split()[-1]) >= len(LIFE) + 1
    assert "event_delivery_lag_seconds_bucket" in exposition


async def test_a_receiver_down_then_up_gets_every_event(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, database: asyncpg.Pool, subscriptions: list[str]
) -> None:
    subscription_id, receiver, serve = await receiving(ops, subscriptions)
    customer = await register(portal, f"down.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    customer = await finish_onboarding(portal, customer["id"])

    async def failed_while_down() -> list[dict[str, Any]]:
        return [d for d in await deliveries(ops, subscription_id, "RETRYING") if d["customerId"] == customer["id"]]

    failed = await eventually(failed_while_down, what="attempts against the stopped receiver")
    assert failed[0]["attempts"][0]["statusCode"] is None and "Connect" in failed[0]["attempts"][0]["error"]

    async with serve():
        ours = await eventually(lambda: receiver.at_least(customer["id"], len(ONBOARDING)), what="every event")
    assert sorted(e["id"] for e in ours) == sorted(await outbox_ids(database, customer["id"]))
    assert sorted(e["sequence"] for e in ours) == list(range(1, len(ONBOARDING) + 1))


async def test_killing_the_worker_during_onboardings_loses_no_event_and_changes_no_id(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient, database: asyncpg.Pool, subscriptions: list[str]
) -> None:
    _, receiver, serve = await receiving(ops, subscriptions)

    def crash_worker() -> None:
        stack.kill("worker")  # SIGKILL: mid-round, mid-send, mid-record_change
        stack.restart("worker")

    async def all_reach(stage: str) -> list[dict[str, Any]]:
        return [await wait_for_stage(portal, c["id"], stage, timeout=120) for c in customers]

    async with serve():
        # Each kill lands right after a step of all six was set off, so work is in flight however fast the
        # machine is: provisioning and the first records, the submissions, the activations and their deliveries.
        customers = [await register(portal, f"kill.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL") for _ in range(6)]
        crash_worker()
        links = [c["kyc"]["verificationUrl"] for c in await all_reach("AWAITING_KYC")]
        for link in links:
            await press(link, "submit")
        crash_worker()
        await all_reach("KYC_IN_REVIEW")
        for link in links:
            await press(link, "approve")
        crash_worker()
        await all_reach("ONBOARDED")
        for customer in customers:
            expected = await outbox_ids(database, customer["id"])
            assert len(expected) == len(ONBOARDING)

            async def all_of_them(customer_id: str = customer["id"], expected: list[str] = expected) -> bool:
                return {e["id"] for e in receiver.of(customer_id)} >= set(expected)

            await eventually(all_of_them, timeout=90, what="every event of a customer onboarded through the kills")
            got = receiver.of(customer["id"])
            assert {e["id"] for e in got} == set(expected), "an event arrived with an id the outbox does not hold"
            # At least once: a send in flight when the worker died may come twice, always with the same id.
            assert {(e["id"], e["sequence"], e["type"]) for e in got} == {
                (e["id"], e["sequence"], e["type"]) for e in got if e["id"] in expected
            }


async def test_a_hanging_endpoint_does_not_hold_up_a_healthy_one(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, database: asyncpg.Pool, subscriptions: list[str]
) -> None:
    slow_id, slow, serve_slow = await receiving(ops, subscriptions, mode="hang")
    _, healthy, serve_healthy = await receiving(ops, subscriptions)
    async with serve_slow(), serve_healthy():
        customer = await register(portal, f"slow.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
        onboarded = await finish_onboarding(portal, customer["id"])  # the customer's workflow is not held up either
        assert onboarded["status"] == "ACTIVE"
        await eventually(lambda: healthy.at_least(customer["id"], len(ONBOARDING)), what="the healthy receiver")

        async def slow_attempts() -> list[dict[str, Any]]:
            return [
                d for d in await deliveries(ops, slow_id) if d["customerId"] == customer["id"] and d["attemptCount"]
            ]

        attempted = await eventually(slow_attempts, what="the hanging endpoint's first attempt to end")
        slow.released.set()
    received_at = {e.event["id"]: e.at for e in healthy.received}
    for delivery in attempted:
        attempt = delivery["attempts"][0]
        assert attempt["error"].startswith("no answer within 5 s")
        ended = datetime.fromisoformat(attempt["attemptedAt"]) + timedelta(milliseconds=attempt["latencyMs"])
        assert received_at[delivery["eventId"]] < ended, "the healthy endpoint waited for the hanging one"


async def test_replay_redelivers_with_the_same_event_id(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, subscriptions: list[str]
) -> None:
    subscription_id, receiver, serve = await receiving(ops, subscriptions)
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with serve():
        customer = await register(portal, f"replay.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
        first = (await eventually(lambda: receiver.at_least(customer["id"], 2), what="the registration"))[:2]
        delivery = next(
            d for d in await deliveries(ops, subscription_id) if d["eventId"] == first[0]["id"] and d["deliveredAt"]
        )
        replayed = await graphql(ops, REPLAY, {"input": {"deliveryId": delivery["id"]}})
        assert replayed["data"]["eventDeliveryReplay"]["replayed"] == 1, replayed
        await eventually(lambda: receiver.at_least(customer["id"], 3), what="the replayed delivery")
        again = [e for e in receiver.of(customer["id"]) if e["id"] == first[0]["id"]]
        assert len(again) == 2 and again[1] == first[0]  # the same event, id and all
        assert len([r for r in receiver.received if r.headers["webhook-id"] == first[0]["id"]]) == 2

        count = len(receiver.of(customer["id"]))
        since = await graphql(ops, REPLAY, {"input": {"subscriptionId": subscription_id, "since": before.isoformat()}})
        assert since["data"]["eventDeliveryReplay"]["replayed"] >= 2, since
        everything = await eventually(lambda: receiver.at_least(customer["id"], count + 2), what="the replay since")
        assert {e["id"] for e in everything[count:]} >= {e["id"] for e in first}  # the same ids again

    refused = await graphql(ops, REPLAY, {"input": {"deliveryId": delivery["id"], "subscriptionId": subscription_id}})
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unknown = await graphql(ops, REPLAY, {"input": {"deliveryId": "999999999"}})
    assert unknown["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_the_receiver_rejects_forged_and_stale_requests_and_rotation_signs_with_both_secrets(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, subscriptions: list[str]
) -> None:
    subscription_id, receiver, serve = await receiving(ops, subscriptions, ["customer.registered"])
    async with serve() as url:
        customer = await register(portal, f"forge.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
        await eventually(lambda: receiver.at_least(customer["id"], 1), what="the registration")
        genuine = next(r for r in receiver.received if r.event["subject"] == customer["id"])
        forged_body = genuine.body.replace(b"customer.registered", b"customer.activated")
        stale = datetime.now(UTC) - timedelta(minutes=10)
        attempts = {
            "a changed body": (forged_body, genuine.headers),
            "another secret": (
                genuine.body,
                _signed(genuine, "whsec_" + "Zm9yZ2VkIGZvcmdlZCBmb3JnZWQ=", datetime.now(UTC)),
            ),
            "an old timestamp": (genuine.body, _signed(genuine, receiver.secret, stale)),
        }
        async with httpx.AsyncClient(base_url=url) as http:
            for what, (body, headers) in attempts.items():
                answer = await http.post("/hook", content=body, headers=_webhook_headers(headers))
                assert answer.status_code == 401, what
        assert len(receiver.rejected) == 3 and any("too old" in why for why in receiver.rejected)
        assert len([r for r in receiver.received if r.event["subject"] == customer["id"]]) == 1

        rotated = (await graphql(ops, ROTATE, {"id": subscription_id}))["data"]["eventSubscriptionSecretRotate"]
        assert rotated["secret"] != receiver.secret and rotated["subscription"]["previousSecretValidUntil"]
        old_secret, receiver.secret = receiver.secret, rotated["secret"]
        second = await register(portal, f"forge.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
        await eventually(lambda: receiver.at_least(second["id"], 1), what="a delivery after the rotation")
        after = next(r for r in receiver.received if r.event["subject"] == second["id"])
        assert len(after.headers["webhook-signature"].split(" ")) == 2
        assert Webhook(old_secret).verify(after.body, after.headers)["id"] == after.event["id"]


def _signed(genuine: Received, secret: str, at: datetime) -> dict[str, str]:
    message_id = genuine.headers["webhook-id"]
    signature = sign(message_id=message_id, timestamp=at, body=genuine.body.decode(), secrets=[secret])
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signature}


def _webhook_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("webhook-")}


async def test_a_dead_endpoint_is_dead_lettered_then_disabled(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, database: asyncpg.Pool, subscriptions: list[str]
) -> None:
    subscription_id, _, _ = await receiving(ops, subscriptions, ["customer.registered"])  # never served
    customer = await register(portal, f"dead.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")

    async def dead() -> list[dict[str, Any]]:
        return [d for d in await deliveries(ops, subscription_id, "DEAD") if d["customerId"] == customer["id"]]

    (letter,) = await eventually(dead, timeout=90, what="the schedule to be spent")
    assert letter["attemptCount"] == 8 and letter["nextAttemptAt"] is None  # the first try and seven retries
    assert all(a["statusCode"] is None and a["error"] for a in letter["attempts"])

    # Failing for five days: the next failed round disables the subscription.
    await database.execute(
        "UPDATE event_subscriptions SET failing_since = now() - interval '5 days 1 minute' WHERE id = $1",
        subscription_id,
    )
    replay = await graphql(ops, REPLAY, {"input": {"deliveryId": letter["id"]}})
    assert replay["data"]["eventDeliveryReplay"]["delivery"]["status"] == "PENDING"

    async def disabled() -> dict[str, Any] | None:
        listed = (await graphql(ops, "{ eventSubscriptions { id enabled disabledReason } }", {}))["data"]
        mine = next(s for s in listed["eventSubscriptions"] if s["id"] == subscription_id)
        return mine if not mine["enabled"] else None

    off = await eventually(disabled, what="the subscription to be disabled")
    assert "every delivery failed since" in off["disabledReason"]
    refused = await graphql(ops, REPLAY, {"input": {"deliveryId": letter["id"]}})
    assert refused["errors"][0]["extensions"]["code"] == "CONFLICT" and "enable it" in refused["errors"][0]["message"]
    enabled = await graphql(ops, UPDATE, {"input": {"id": subscription_id, "enabled": True}})
    assert enabled["data"]["eventSubscriptionUpdate"]["subscription"] == {
        "id": subscription_id,
        "enabled": True,
        "disabledReason": None,
        "eventTypes": ["customer.registered"],
    }


@pytest.mark.parametrize(
    ("url", "event_types", "field", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", [], "url", "link-local"),
        ("http://[fe80::1]/hook", [], "url", "link-local"),
        ("http://10.1.2.3/hook", [], "url", "private"),
        ("ftp://127.0.0.1/hook", [], "url", "https"),
        ("http://no-such-host.invalid/hook", [], "url", "does not resolve"),
        ("http://127.0.0.1:9/hook", ["customer.nope"], "eventTypes", "unknown event types"),
    ],
)
async def test_a_subscription_to_a_refused_address_or_type_is_refused_and_nothing_is_stored(
    ops: httpx.AsyncClient, database: asyncpg.Pool, url: str, event_types: list[str], field: str, why: str
) -> None:
    before = await database.fetchval("SELECT count(*) FROM event_subscriptions")
    body = await graphql(ops, CREATE, {"input": {"url": url, "eventTypes": event_types}})
    error = body["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field} and why in error["message"], body
    assert await database.fetchval("SELECT count(*) FROM event_subscriptions") == before


async def test_only_ops_manage_subscriptions(portal: httpx.AsyncClient, ops: httpx.AsyncClient) -> None:
    body = await graphql(portal, CREATE, {"input": {"url": "http://127.0.0.1:9/hook"}})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    listed = await graphql(portal, "{ eventSubscriptions { id } }", {})
    assert listed["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    missing = await graphql(ops, DELETE, {"id": str(uuid.uuid4())})
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    bad = await graphql(ops, DELETE, {"id": "not-an-id"})
    assert bad["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}


def readme_receiver(port: int) -> str:
    """The receiver the README shows (its `receiver.py` block), on a port of the test's."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("# receiver.py:")
    code = readme[start : readme.index("```", start)]
    assert code.count("9000") == 2
    return code.replace("9000", str(port))


async def test_the_readme_receiver_sees_an_activation_arrive_verified(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, subscriptions: list[str], tmp_path: Path
) -> None:
    port = free_port()
    subscription_id, secret = await subscribe(ops, f"http://127.0.0.1:{port}/hook")
    subscriptions.append(subscription_id)
    script = tmp_path / "receiver.py"
    script.write_text(readme_receiver(port))
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, str(script), secret, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        customer = await register(portal, f"readme.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
        await finish_onboarding(portal, customer["id"])
        assert receiver.stdout is not None
        wanted = f"customer.activated {customer['id']} sequence 5 verified"
        lines: list[str] = []
        while wanted not in lines:
            line = await asyncio.wait_for(receiver.stdout.readline(), timeout=60)
            assert line, f"the receiver ended: {lines}"
            lines.append(line.decode().strip())
        async with httpx.AsyncClient() as http:  # and a forged request is what it refuses
            forged = await http.post(
                f"http://127.0.0.1:{port}/hook",
                content=b'{"type": "customer.activated"}',
                headers={"webhook-id": "x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,Zm9v"},
            )
        assert forged.status_code == 401
    finally:
        receiver.kill()
        await receiver.wait()


async def test_a_redirect_is_an_answer_not_followed(
    portal: httpx.AsyncClient, ops: httpx.AsyncClient, subscriptions: list[str]
) -> None:
    followed: list[str] = []

    async def redirect(request: Request) -> Response:
        return Response(status_code=302, headers={"Location": f"http://127.0.0.1:{port}/elsewhere"})

    async def elsewhere(request: Request) -> Response:
        followed.append(request.url.path)
        return Response(status_code=204)

    port = free_port()
    subscription_id, _ = await subscribe(ops, f"http://127.0.0.1:{port}/hook", ["customer.registered"])
    subscriptions.append(subscription_id)
    app = Starlette(
        routes=[Route("/hook", redirect, methods=["POST"]), Route("/elsewhere", elsewhere, methods=["GET", "POST"])]
    )
    async with running_app(app, port):
        customer = await register(portal, f"redirect.{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")

        async def attempted() -> list[dict[str, Any]]:
            return [d for d in await deliveries(ops, subscription_id) if d["customerId"] == customer["id"]]

        (delivery,) = await eventually(lambda: _with_attempts(attempted), what="the redirected attempt")
    attempt = delivery["attempts"][0]
    assert attempt["statusCode"] == 302 and "not followed" in attempt["error"] and delivery["status"] == "RETRYING"
    assert followed == []


async def _with_attempts(found: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]] | None:
    deliveries = await found()
    return deliveries if deliveries and all(d["attemptCount"] for d in deliveries) else None
