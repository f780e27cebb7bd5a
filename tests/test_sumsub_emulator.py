"""The Sumsub emulator honours the contract: signatures on every API call, Sumsub-shaped errors, signed
webhooks in the real payload shape with Sumsub's retry rules, and a WebSDK page that drives reviews."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dev.emulators.sumsub import DEFAULT_ACTION_RETRY_DELAYS, _WebhookSender, create_app
from integrations.sumsub.client import Applicant, SumsubAuth, SumsubClient, SumsubError, sign_request
from integrations.sumsub.webhooks import verify_webhook_digest
from tests.helpers import free_port, running_app

APP_TOKEN = "sbx:emulator-test-token"
SECRET_KEY = "emulator-test-secret"
WEBHOOK_SECRET = "emulator-test-webhook-secret"
LEVEL = "basic-kyc-level"
pytestmark = pytest.mark.stack  # serves the emulator (and a webhook receiver) on loopback

FAST_RETRIES = (0.05, 0.05, 0.05, 0.05)
SIGNATURE_MISMATCH = {
    "description": "Request signature mismatch",
    "code": 401,
    "errorCode": 4003,
    "errorName": "app-token-signature mismatch",
}
WEBHOOK_KEYS = {
    "applicantId",
    "inspectionId",
    "correlationId",
    "externalUserId",
    "levelName",
    "type",
    "reviewStatus",
    "createdAtMs",
    "sandboxMode",
    "applicantType",
    "clientId",
}


@dataclass
class Receiver:
    """Our side of the webhooks: records every call, failing or stalling the first few on request."""

    fail_first: int = 0
    stall_first: float = 0.0
    calls: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.calls.append((await request.body(), dict(request.headers)))
        if len(self.calls) == 1 and self.stall_first:
            await asyncio.sleep(self.stall_first)
        if len(self.calls) <= self.fail_first:
            return Response(status_code=500)
        return Response(status_code=200)

    def payloads(self, event_type: str | None = None) -> list[dict[str, Any]]:
        bodies = [json.loads(body) for body, _ in self.calls]
        return [body for body in bodies if event_type is None or body["type"] == event_type]


@dataclass
class Stack:
    url: str
    receiver: Receiver
    client: SumsubClient
    http: httpx.AsyncClient


@asynccontextmanager
async def emulator(
    *,
    alg: str = "HMAC_SHA256_HEX",
    retry_delays: tuple[float, ...] = FAST_RETRIES,
    delivery_timeout: float = 2.0,
    receiver: Receiver | None = None,
) -> AsyncIterator[Stack]:
    """A receiver and an emulator posting to it, both over real HTTP, plus a client and a browser."""
    receiver = receiver or Receiver()
    receiver_app = Starlette(routes=[Route("/webhooks/sumsub", receiver.endpoint, methods=["POST"])])
    port = free_port()
    async with running_app(receiver_app) as receiver_url:
        app = create_app(
            app_token=APP_TOKEN,
            secret_key=SECRET_KEY,
            webhook_url=f"{receiver_url}/webhooks/sumsub",
            webhook_secret=WEBHOOK_SECRET,
            webhook_alg=alg,
            public_url=f"http://127.0.0.1:{port}",
            retry_delays=retry_delays,
            delivery_timeout=delivery_timeout,
        )
        async with (
            running_app(app, port) as url,
            SumsubClient(base_url=url, app_token=APP_TOKEN, secret_key=SECRET_KEY) as client,
            httpx.AsyncClient(base_url=url) as http,
        ):
            yield Stack(url, receiver, client, http)


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Polls until `condition` holds; webhooks arrive asynchronously."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def deliveries_when(
    stack: Stack, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = 3.0
) -> list[dict[str, Any]]:
    """Polls the emulator's delivery log (unsigned, emulator-only) until `condition` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        response = await stack.http.get("/_emulator/deliveries")
        assert response.status_code == 200
        log: list[dict[str, Any]] = response.json()
        if condition(log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery log never matched: {log}")
        await asyncio.sleep(0.02)


def _eid(label: str) -> str:
    return f"{label}-{time.time_ns()}"


async def create_applicant(stack: Stack, label: str) -> Applicant:
    applicant, _ = await stack.client.create_applicant(
        external_user_id=_eid(label), level_name=LEVEL, applicant_type="individual"
    )
    return applicant


# --- signatures and API errors ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[httpx.AsyncClient]:
    """One emulator without webhooks, shared by the tests that only exercise the signed API."""
    port = free_port()
    app = create_app(
        app_token=APP_TOKEN,
        secret_key=SECRET_KEY,
        webhook_url=None,
        webhook_secret=WEBHOOK_SECRET,
        public_url=f"http://127.0.0.1:{port}",
    )
    async with running_app(app, port) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


API_CALLS = [
    ("POST", "/resources/applicants?levelName=basic-kyc-level", b'{"externalUserId":"sig-x"}'),
    ("GET", "/resources/applicants/-;externalUserId=sig-x/one", b""),
    ("GET", "/resources/applicants/5cb56e8e0a975a35f333cb83/one", b""),
    ("GET", "/resources/applicants/5cb56e8e0a975a35f333cb83/status", b""),
    ("POST", "/resources/sdkIntegrations/levels/-/websdkLink", b'{"levelName":"l","userId":"x","ttlInSecs":60}'),
    ("POST", "/resources/accessTokens/sdk", b'{"levelName":"l","userId":"x","ttlInSecs":60}'),
    ("POST", "/resources/applicants/5cb56e8e0a975a35f333cb83/reset", b""),
    ("POST", "/resources/applicants/5cb56e8e0a975a35f333cb83/moveToLevel?name=advanced-kyc-level", b""),
    ("PATCH", "/resources/applicants/5cb56e8e0a975a35f333cb83/presence/deactivated", b""),
    ("POST", "/resources/applicants/5cb56e8e0a975a35f333cb83/status/testCompleted", b'{"reviewAnswer":"GREEN"}'),
]


def _headers(
    method: str, target: str, body: bytes, *, secret: str = SECRET_KEY, ts: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "X-App-Token": APP_TOKEN,
        "X-App-Access-Ts": str(ts),
        "X-App-Access-Sig": sign_request(secret, ts, method, target, body),
        "Content-Type": "application/json",
    }


@pytest.mark.parametrize(("method", "target", "body"), API_CALLS)
async def test_every_api_call_needs_a_valid_signature(
    api: httpx.AsyncClient, method: str, target: str, body: bytes
) -> None:
    unsigned = await api.request(method, target, content=body)
    wrong_secret = await api.request(method, target, content=body, headers=_headers(method, target, body, secret="no"))
    signed = await api.request(method, target, content=body, headers=_headers(method, target, body))

    for response in (unsigned, wrong_secret):
        assert response.status_code == 401
        error = response.json()
        assert list(error) == ["description", "code", "correlationId", "errorCode", "errorName"]
        assert {key: error[key] for key in SIGNATURE_MISMATCH} == SIGNATURE_MISMATCH
        assert error["correlationId"]
    assert signed.status_code != 401


async def test_signature_covers_the_body_the_query_and_the_encoded_path(api: httpx.AsyncClient) -> None:
    body = b'{"externalUserId":"x"}'
    tampered_body = await api.post(
        "/resources/applicants?levelName=l",
        content=b'{"externalUserId":"y"}',
        headers=_headers("POST", "/resources/applicants?levelName=l", body),
    )
    query_not_signed = await api.post(
        "/resources/applicants?levelName=l", content=body, headers=_headers("POST", "/resources/applicants", body)
    )
    decoded_path_signed = await api.get(
        "/resources/applicants/-;externalUserId=a%2Fb/one",
        headers=_headers("GET", "/resources/applicants/-;externalUserId=a/b/one", b""),
    )

    assert [r.status_code for r in (tampered_body, query_not_signed, decoded_path_signed)] == [401, 401, 401]


async def test_stale_timestamp_is_rejected(api: httpx.AsyncClient) -> None:
    target = "/resources/applicants/-;externalUserId=nobody/one"
    stale = await api.get(target, headers=_headers("GET", target, b"", ts=int(time.time()) - 90))
    fresh = await api.get(target, headers=_headers("GET", target, b"", ts=int(time.time()) - 50))

    assert stale.status_code == 401
    assert stale.json()["errorCode"] == 4003
    assert fresh.status_code == 404


async def test_create_applicant_validates_and_reports_duplicates(api: httpx.AsyncClient) -> None:
    eid = _eid("dup")
    auth = SumsubAuth(APP_TOKEN, SECRET_KEY)
    no_level = await api.post("/resources/applicants", json={"externalUserId": "x"}, auth=auth)
    no_eid = await api.post("/resources/applicants", params={"levelName": LEVEL}, json={}, auth=auth)
    level = {"levelName": LEVEL}
    first = await api.post("/resources/applicants", params=level, json={"externalUserId": eid}, auth=auth)
    again = await api.post("/resources/applicants", params=level, json={"externalUserId": eid}, auth=auth)

    for response in (no_level, no_eid):
        assert response.status_code == 400
        assert response.json()["code"] == 400
        assert response.json()["description"]
        assert response.json()["correlationId"]
    assert first.status_code == 201
    assert again.status_code == 409
    conflict = again.json()
    assert list(conflict) == ["code", "description", "correlationId"]
    assert conflict["description"] == f"Applicant with external user id '{eid}' already exists: {first.json()['id']}"


async def test_sdk_access_token(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/resources/accessTokens/sdk",
        json={"userId": "u-1", "levelName": LEVEL, "ttlInSecs": 600},
        auth=SumsubAuth(APP_TOKEN, SECRET_KEY),
    )

    assert response.status_code == 200
    assert response.json()["userId"] == "u-1"
    assert response.json()["token"]


# --- webhooks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HMAC_SHA1_HEX", "HMAC_SHA256_HEX", "HMAC_SHA512_HEX"])
async def test_webhooks_are_signed_and_shaped_like_sumsubs(alg: str) -> None:
    async with emulator(alg=alg) as stack:
        eid = _eid("webhook")
        applicant, _ = await stack.client.create_applicant(
            external_user_id=eid, level_name=LEVEL, applicant_type="individual", email="ada@example.com"
        )
        await eventually(lambda: len(stack.receiver.calls) == 1)

    body, headers = stack.receiver.calls[0]
    assert headers["x-payload-digest-alg"] == alg
    assert verify_webhook_digest(body, digest=headers["x-payload-digest"], alg=alg, secret=WEBHOOK_SECRET)
    assert not verify_webhook_digest(body, digest=headers["x-payload-digest"], alg=alg, secret=SECRET_KEY)
    payload = json.loads(body)
    assert set(payload) == WEBHOOK_KEYS
    assert b"ada@example.com" not in body
    assert payload["type"] == "applicantCreated"
    assert payload["applicantId"] == applicant.id
    assert payload["inspectionId"] == applicant.inspection_id
    assert payload["externalUserId"] == eid
    assert payload["levelName"] == LEVEL
    assert payload["reviewStatus"] == "init"
    assert payload["applicantType"] == "individual"
    assert payload["sandboxMode"] is True
    assert re.fullmatch(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", payload["correlationId"])
    created_at = payload["createdAtMs"]
    assert isinstance(created_at, str)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}", created_at)
    moment = datetime.strptime(created_at, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - moment) < timedelta(seconds=30)


async def test_api_state_changes_send_their_webhooks() -> None:
    async with emulator() as stack:
        applicant, _ = await stack.client.create_applicant(
            external_user_id=_eid("api"), level_name=LEVEL, applicant_type="company"
        )
        await stack.client.simulate_review(
            applicant.id, review_answer="RED", reject_type="FINAL", reject_labels=["FORGERY"], client_comment="fake"
        )
        await stack.client.reset_applicant(applicant.id)
        await stack.client.deactivate_applicant(applicant.id)
        await eventually(lambda: len(stack.receiver.calls) == 4)

    by_type = {payload["type"]: payload for payload in stack.receiver.payloads()}
    assert set(by_type) == {"applicantCreated", "applicantReviewed", "applicantReset", "applicantDeactivated"}
    assert all(payload["applicantType"] == "company" for payload in by_type.values())
    assert by_type["applicantReviewed"]["reviewStatus"] == "completed"
    assert by_type["applicantReviewed"]["reviewResult"] == {
        "reviewAnswer": "RED",
        "rejectLabels": ["FORGERY"],
        "reviewRejectType": "FINAL",
        "clientComment": "fake",
    }
    assert by_type["applicantReset"]["reviewStatus"] == "init"
    assert "reviewResult" not in by_type["applicantReset"]


async def test_moving_to_another_level_is_refused_during_a_review_and_announced_with_the_previous_level() -> None:
    async with emulator() as stack:
        applicant = await create_applicant(stack, "level")
        link = await stack.client.create_websdk_link(
            external_user_id=applicant.external_user_id, level_name=LEVEL, ttl_seconds=600
        )
        token = link.rsplit("/", 1)[1]
        assert (await stack.http.post(f"/websdk/{token}/submit")).status_code == 303  # the review is pending now
        with pytest.raises(SumsubError) as refused:
            await stack.client.move_to_level(applicant.id, "advanced-kyc-level")
        assert refused.value.status_code == 400
        assert refused.value.description == "Level can't be changed while the applicant's review is pending"
        assert (await stack.client.get_review_status(applicant.id)).level_name == LEVEL

        await stack.client.simulate_review(applicant.id, review_answer="GREEN")
        await stack.client.move_to_level(applicant.id, "advanced-kyc-level")
        await stack.client.move_to_level(applicant.id, "advanced-kyc-level")  # already there: nothing happens
        status = await stack.client.get_review_status(applicant.id)
        assert (status.level_name, status.review_status, status.review_result) == ("advanced-kyc-level", "init", None)
        await eventually(lambda: len(stack.receiver.payloads("applicantLevelChanged")) == 1)
        [changed] = stack.receiver.payloads("applicantLevelChanged")
        assert (changed["levelName"], changed["previousLevelName"], changed["reviewStatus"]) == (
            "advanced-kyc-level",
            LEVEL,
            "init",
        )
        # The review at the new level carries that level's name.
        await stack.client.simulate_review(applicant.id, review_answer="RED", reject_type="FINAL")
        await eventually(lambda: len(stack.receiver.payloads("applicantReviewed")) == 2)
        assert stack.receiver.payloads("applicantReviewed")[-1]["levelName"] == "advanced-kyc-level"
        with pytest.raises(SumsubError) as unknown:
            await stack.client.move_to_level("5cb56e8e0a975a35f333cb83", "advanced-kyc-level")
        assert unknown.value.status_code == 404


async def test_failed_delivery_is_resent_until_it_succeeds() -> None:
    async with emulator(receiver=Receiver(fail_first=2)) as stack:
        await create_applicant(stack, "retry")
        log = await deliveries_when(stack, lambda log: any(a["outcome"] == "delivered" for a in log))

    assert [(a["attempt"], a["status"], a["outcome"]) for a in log] == [
        (0, 500, "retrying"),
        (1, 500, "retrying"),
        (2, 200, "delivered"),
    ]
    bodies = {body for body, _ in stack.receiver.calls}
    digests = {headers["x-payload-digest"] for _, headers in stack.receiver.calls}
    assert len(bodies) == 1 and len(digests) == 1


async def test_delivery_is_given_up_after_four_resends() -> None:
    async with emulator(receiver=Receiver(fail_first=100)) as stack:
        await create_applicant(stack, "give-up")
        log = await deliveries_when(stack, lambda log: any(a["outcome"] == "gave_up" for a in log))
        # A further resend would come FAST_RETRIES[-1] after the last attempt; wait a few of those for none.
        await asyncio.sleep(4 * FAST_RETRIES[-1])

    assert len(stack.receiver.calls) == 5
    assert [(a["attempt"], a["status"], a["outcome"]) for a in log] == [
        (0, 500, "retrying"),
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 500, "retrying"),
        (4, 500, "gave_up"),
    ]


async def test_slow_receiver_times_out_without_blocking_the_api() -> None:
    async with emulator(receiver=Receiver(stall_first=0.6), delivery_timeout=0.3) as stack:
        started = time.monotonic()
        await create_applicant(stack, "slow")
        api_seconds = time.monotonic() - started
        log = await deliveries_when(stack, lambda log: len(log) == 2)

    assert api_seconds < 0.3
    assert log[0]["status"] is None and "no answer within 0.3 s" in log[0]["error"]
    assert log[0]["outcome"] == "retrying"
    assert (log[1]["status"], log[1]["outcome"]) == (200, "delivered")


async def test_shutdown_cancels_pending_retries() -> None:
    async with emulator(receiver=Receiver(fail_first=100), retry_delays=(60.0, 60.0, 60.0, 60.0)) as stack:
        await create_applicant(stack, "stop")
        await eventually(lambda: len(stack.receiver.calls) == 1)
        started = time.monotonic()

    assert time.monotonic() - started < 5
    assert len(stack.receiver.calls) == 1


def test_applicant_action_webhooks_use_the_shorter_schedule() -> None:
    sender = _WebhookSender(
        url=None,
        secret="s",
        alg="HMAC_SHA256_HEX",
        retry_delays=FAST_RETRIES,
        action_retry_delays=DEFAULT_ACTION_RETRY_DELAYS,
        timeout=5,
    )

    assert DEFAULT_ACTION_RETRY_DELAYS == (30, 30, 60, 300)
    assert sender.retry_delays_for("applicantActionReviewed") == (30, 30, 60, 300)
    assert sender.retry_delays_for("applicantReviewed") == FAST_RETRIES


# --- WebSDK page -----------------------------------------------------------------------------------


async def test_websdk_page_buttons_drive_the_review_and_its_webhooks() -> None:
    async with emulator() as stack:
        eid = _eid("websdk")
        applicant, _ = await stack.client.create_applicant(
            external_user_id=eid, level_name=LEVEL, applicant_type="individual"
        )
        url = await stack.client.create_websdk_link(external_user_id=eid, level_name=LEVEL, ttl_seconds=600)
        token = url.rsplit("/", 1)[1]
        async with httpx.AsyncClient() as browser:
            page = await browser.get(url)
            assert page.status_code == 200
            assert "text/html" in page.headers["content-type"]
            for text in (applicant.id, eid, LEVEL, "<dd>init</dd>"):
                assert text in page.text
            for action, label in [
                ("submit", "Submit documents"),
                ("approve", "Approve"),
                ("resubmit", "Request resubmission"),
                ("reject", "Reject"),
                ("hold", "Put on hold"),
            ]:
                assert f'action="/websdk/{token}/{action}"' in page.text
                assert f">{label}</button>" in page.text

            submitted = await browser.post(f"{url}/submit")
            assert submitted.status_code == 303
            assert submitted.headers["location"] == f"/websdk/{token}"
            page = await browser.post(f"{url}/resubmit", follow_redirects=True)
            assert "<dd>completed</dd>" in page.text and "<dd>RETRY</dd>" in page.text
            assert "Document is blurry; please upload a new photo" in page.text
            resubmission = await stack.client.get_review_status(applicant.id)

            await browser.post(f"{url}/submit")
            page = await browser.post(f"{url}/hold", follow_redirects=True)
            assert "<dd>onHold</dd>" in page.text
            page = await browser.post(f"{url}/approve", follow_redirects=True)
            assert "<dd>GREEN</dd>" in page.text
            page = await browser.post(f"{url}/reject", follow_redirects=True)
            assert "<dd>FINAL</dd>" in page.text
            final = await stack.client.get_review_status(applicant.id)
        await eventually(lambda: len(stack.receiver.calls) == 7)

    assert resubmission.review_result is not None
    assert resubmission.review_result.review_answer == "RED"
    assert resubmission.review_result.review_reject_type == "RETRY"
    assert resubmission.review_result.moderation_comment == "Document is blurry; please upload a new photo"
    assert final.review_status == "completed" and final.attempt_cnt == 2
    assert final.review_result is not None and final.review_result.review_reject_type == "FINAL"
    types = sorted(payload["type"] for payload in stack.receiver.payloads())
    assert types == sorted(
        ["applicantCreated", "applicantPending", "applicantReviewed", "applicantPending", "applicantOnHold"]
        + ["applicantReviewed", "applicantReviewed"]
    )
    answers = sorted(
        (p["reviewResult"]["reviewAnswer"], p["reviewResult"].get("reviewRejectType"))
        for p in stack.receiver.payloads("applicantReviewed")
    )
    assert answers == [("GREEN", None), ("RED", "FINAL"), ("RED", "RETRY")]
    assert all(p["reviewStatus"] == "pending" for p in stack.receiver.payloads("applicantPending"))


async def test_opening_a_link_creates_the_applicant_like_sumsub() -> None:
    async with emulator() as stack:
        eid = _eid("first-visit")
        url = await stack.client.create_websdk_link(external_user_id=eid, level_name=LEVEL, ttl_seconds=600)
        assert await stack.client.get_applicant_by_external_user_id(eid) is None
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(url)).status_code == 200
        applicant = await stack.client.get_applicant_by_external_user_id(eid)
        await eventually(lambda: len(stack.receiver.calls) == 1)

    assert applicant is not None and applicant.level_name == LEVEL
    assert stack.receiver.payloads()[0]["type"] == "applicantCreated"


async def test_websdk_unknown_expired_and_bad_action() -> None:
    async with emulator() as stack:
        eid = _eid("expired")
        expired = await stack.client.create_websdk_link(external_user_id=eid, level_name=LEVEL, ttl_seconds=0)
        live = await stack.client.create_websdk_link(external_user_id=eid, level_name=LEVEL, ttl_seconds=600)
        async with httpx.AsyncClient() as browser:
            unknown = await browser.get(f"{stack.url}/websdk/no-such-token")
            gone = await browser.get(expired)
            gone_action = await browser.post(f"{expired}/approve")
            bad_action = await browser.post(f"{live}/teleport")

    assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]
    assert gone.status_code == 410 and "expired" in gone.text
    assert gone_action.status_code == 410
    assert bad_action.status_code == 404
    assert not stack.receiver.payloads("applicantReviewed")
