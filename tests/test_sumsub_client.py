"""The production Sumsub client: signing against Sumsub's documented recipe, and every call over real HTTP
against the emulator (which checks signatures like Sumsub)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dev.emulators.sumsub import create_app
from integrations.sumsub.client import SumsubAuth, SumsubClient, SumsubError, sign_request
from integrations.sumsub.webhooks import WEBHOOK_DIGEST_ALGORITHMS, verify_webhook_digest, webhook_digest
from kit.settings import Settings
from tests.helpers import free_port, running_app

APP_TOKEN = "sbx:client-test-token"
SECRET_KEY = "client-test-secret"
LEVEL = "basic-kyc-level"


@pytest.fixture(scope="module")
async def emulator_url(starts_servers: None) -> AsyncIterator[str]:
    port = free_port()
    app = create_app(
        app_token=APP_TOKEN,
        secret_key=SECRET_KEY,
        webhook_url=None,
        webhook_secret="unused",
        public_url=f"http://127.0.0.1:{port}",
    )
    async with running_app(app, port) as url:
        yield url


@pytest.fixture
async def client(emulator_url: str) -> AsyncIterator[SumsubClient]:
    async with SumsubClient(base_url=emulator_url, app_token=APP_TOKEN, secret_key=SECRET_KEY) as sumsub:
        yield sumsub


def _eid(label: str) -> str:
    return f"{label}-{time.time_ns()}"


# --- signing ---------------------------------------------------------------------------------------


def test_sign_request_matches_sumsubs_documented_string_to_sign() -> None:
    # docs.sumsub.com/reference/authentication documents the string to sign for this request (ts
    # 1607551635, no body) but publishes no resulting signature, so the expected value is computed here
    # with hmac from that documented string; the secret is the example one in Sumsub's
    # AppTokenUsageExamples (Python/AppTokenPythonExample.py).
    secret = "Hej2ch71kG2kTd1iIUDZFNsO5C1lh5Gq"
    path = "/resources/accessTokens?userId=cfd20712-24a2-4c7d-9ab0-146f3c142335&levelName=basic-kyc-level&ttlInSecs=600"
    documented = b"1607551635POST" + path.encode()
    expected = hmac.new(secret.encode(), documented, hashlib.sha256).hexdigest()

    assert sign_request(secret, 1607551635, "POST", path, b"") == expected
    assert sign_request(secret, "1607551635", "post", path.encode(), b"") == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)


def test_sign_request_appends_the_raw_body() -> None:
    body = b'{"externalUserId":"u-1"}'
    expected = hmac.new(b"k", b"1POST/resources/applicants?levelName=x" + body, hashlib.sha256).hexdigest()

    assert sign_request("k", 1, "POST", "/resources/applicants?levelName=x", body) == expected
    assert sign_request("k", 1, "POST", "/resources/applicants?levelName=x", b"") != expected


def test_auth_signs_the_path_exactly_as_sent() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: seen.append(request) or httpx.Response(200))
    auth = SumsubAuth(APP_TOKEN, SECRET_KEY, clock=lambda: 1607551635.9)
    with httpx.Client(base_url="https://api.example", auth=auth, transport=transport) as http:
        http.get("/resources/applicants/-;externalUserId=a%2Fb%3Bc/one")
        http.post("/resources/applicants", params={"levelName": "kyc level"}, json={"externalUserId": "é"})

    get, post = seen
    assert get.headers["X-App-Token"] == APP_TOKEN
    assert get.headers["X-App-Access-Ts"] == "1607551635"
    assert get.headers["X-App-Access-Sig"] == sign_request(
        SECRET_KEY, "1607551635", "GET", b"/resources/applicants/-;externalUserId=a%2Fb%3Bc/one", b""
    )
    assert post.url.raw_path == b"/resources/applicants?levelName=kyc+level"
    assert post.headers["X-App-Access-Sig"] == sign_request(
        SECRET_KEY, "1607551635", "POST", b"/resources/applicants?levelName=kyc+level", post.content
    )
    assert "é".encode() in post.content


# --- calls against the emulator --------------------------------------------------------------------


async def test_create_applicant_returns_a_new_applicant(client: SumsubClient) -> None:
    eid = _eid("create")
    applicant, created = await client.create_applicant(
        external_user_id=eid, level_name=LEVEL, applicant_type="individual", email="ada@example.com"
    )

    assert created is True
    assert re.fullmatch(r"[0-9a-f]{24}", applicant.id)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", applicant.created_at)
    assert applicant.external_user_id == eid
    assert applicant.inspection_id and applicant.inspection_id != applicant.id
    assert applicant.level_name == LEVEL
    assert applicant.type == "individual"
    assert applicant.review.review_status == "init"


async def test_create_applicant_twice_returns_the_existing_one(client: SumsubClient) -> None:
    eid = _eid("dup")
    first, first_created = await client.create_applicant(
        external_user_id=eid, level_name="basic-kyb-level", applicant_type="company"
    )
    again, again_created = await client.create_applicant(
        external_user_id=eid, level_name="basic-kyb-level", applicant_type="company"
    )

    assert (first_created, again_created) == (True, False)
    assert again == first
    assert again.type == "company"


async def test_get_applicant_by_id_and_by_external_id(client: SumsubClient) -> None:
    eid = _eid("odd/chars;x=y?z#é %+@")
    applicant, _ = await client.create_applicant(external_user_id=eid, level_name=LEVEL, applicant_type="individual")

    assert await client.get_applicant(applicant.id) == applicant
    assert await client.get_applicant_by_external_user_id(eid) == applicant
    assert await client.get_applicant_by_external_user_id(_eid("nobody")) is None


async def test_get_unknown_applicant_is_a_non_retryable_404(client: SumsubClient) -> None:
    with pytest.raises(SumsubError) as caught:
        await client.get_applicant("0" * 24)

    assert caught.value.status_code == 404
    assert caught.value.retryable is False
    assert caught.value.correlation_id


async def test_review_lifecycle_through_the_api(client: SumsubClient) -> None:
    applicant, _ = await client.create_applicant(
        external_user_id=_eid("review"), level_name=LEVEL, applicant_type="individual"
    )
    assert (await client.get_review_status(applicant.id)).review_status == "init"

    await client.simulate_review(
        applicant.id,
        review_answer="RED",
        reject_type="RETRY",
        reject_labels=["UNSATISFACTORY_PHOTOS"],
        moderation_comment="Please retake the photo",
        client_comment="blurry",
    )
    status = await client.get_review_status(applicant.id)
    assert status.review_status == "completed"
    assert status.review_result is not None
    assert status.review_result.review_answer == "RED"
    assert status.review_result.review_reject_type == "RETRY"
    assert status.review_result.reject_labels == ["UNSATISFACTORY_PHOTOS"]
    assert status.review_result.moderation_comment == "Please retake the photo"
    assert status.review_result.client_comment == "blurry"
    assert status.review_date is not None

    await client.reset_applicant(applicant.id)
    reset = await client.get_applicant(applicant.id)
    assert reset.review.review_status == "init"
    assert reset.review.review_result is None

    await client.simulate_review(applicant.id, review_answer="GREEN")
    green = await client.get_review_status(applicant.id)
    assert green.review_result is not None and green.review_result.review_answer == "GREEN"
    assert green.review_result.reject_labels == []


async def test_deactivate_applicant(client: SumsubClient) -> None:
    applicant, _ = await client.create_applicant(
        external_user_id=_eid("deactivate"), level_name=LEVEL, applicant_type="individual"
    )
    await client.deactivate_applicant(applicant.id)

    with pytest.raises(SumsubError) as caught:
        await client.deactivate_applicant("f" * 24)
    assert caught.value.status_code == 404


async def test_websdk_link_points_at_a_page_for_the_applicant(client: SumsubClient, emulator_url: str) -> None:
    eid = _eid("link")
    await client.create_applicant(external_user_id=eid, level_name=LEVEL, applicant_type="individual")

    url = await client.create_websdk_link(external_user_id=eid, level_name=LEVEL, ttl_seconds=600)

    assert url.startswith(f"{emulator_url}/websdk/")
    async with httpx.AsyncClient() as browser:
        page = await browser.get(url)
    assert page.status_code == 200
    assert eid in page.text


# --- errors ----------------------------------------------------------------------------------------


async def test_wrong_secret_is_a_401_signature_mismatch(emulator_url: str) -> None:
    async with SumsubClient(base_url=emulator_url, app_token=APP_TOKEN, secret_key="wrong") as sumsub:
        with pytest.raises(SumsubError) as caught:
            await sumsub.get_applicant_by_external_user_id("anyone")

    error = caught.value
    assert error.status_code == 401
    assert error.error_code == 4003
    assert error.error_name == "app-token-signature mismatch"
    assert error.description == "Request signature mismatch"
    assert error.correlation_id
    assert error.retryable is False


async def test_wrong_app_token_is_rejected(emulator_url: str) -> None:
    async with SumsubClient(base_url=emulator_url, app_token="sbx:other", secret_key=SECRET_KEY) as sumsub:
        with pytest.raises(SumsubError) as caught:
            await sumsub.get_review_status("0" * 24)
    assert caught.value.error_code == 4003


@pytest.mark.parametrize(("skew", "expected_status"), [(-120, 401), (120, 401), (-30, 404)])
async def test_timestamp_must_be_within_a_minute(emulator_url: str, skew: int, expected_status: int) -> None:
    auth = SumsubAuth(APP_TOKEN, SECRET_KEY, clock=lambda: time.time() + skew)
    async with httpx.AsyncClient(base_url=emulator_url, auth=auth) as http:
        response = await http.get("/resources/applicants/-;externalUserId=nobody/one")

    assert response.status_code == expected_status
    if expected_status == 401:
        assert response.json()["errorCode"] == 4003


async def test_no_answer_is_a_retryable_error() -> None:
    async with SumsubClient(
        base_url=f"http://127.0.0.1:{free_port()}", app_token=APP_TOKEN, secret_key=SECRET_KEY
    ) as sumsub:
        with pytest.raises(SumsubError) as caught:
            await sumsub.get_applicant("0" * 24)

    assert caught.value.status_code is None
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, httpx.TransportError)


async def test_timeout_is_a_retryable_error() -> None:
    release = asyncio.Event()

    async def hang(request: Request) -> Response:
        await release.wait()
        return Response()

    async with running_app(Starlette(routes=[Route("/resources/applicants/{rest:path}", hang)])) as url:
        async with SumsubClient(base_url=url, app_token=APP_TOKEN, secret_key=SECRET_KEY, timeout=0.2) as sumsub:
            with pytest.raises(SumsubError) as caught:
                await sumsub.get_applicant("0" * 24)
        release.set()

    assert caught.value.status_code is None
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)


@pytest.mark.parametrize(
    ("status_code", "retryable"),
    [(400, False), (401, False), (404, False), (409, False), (429, True), (500, True), (503, True)],
)
def test_error_parses_sumsubs_body_and_knows_what_to_retry(status_code: int, retryable: bool) -> None:
    body = {"description": "nope", "code": status_code, "correlationId": "req-1", "errorCode": 1234, "errorName": "x"}
    error = SumsubError.from_response(httpx.Response(status_code, json=body))

    assert (error.status_code, error.description, error.correlation_id) == (status_code, "nope", "req-1")
    assert (error.error_code, error.error_name) == (1234, "x")
    assert error.retryable is retryable


def test_error_without_a_json_body_keeps_the_text() -> None:
    error = SumsubError.from_response(httpx.Response(502, text="Bad gateway from the proxy"))

    assert error.description == "Bad gateway from the proxy"
    assert error.error_code is None
    assert error.retryable is True


async def test_client_from_settings_uses_the_sumsub_settings(emulator_url: str) -> None:
    settings = Settings(sumsub_base_url=emulator_url, sumsub_app_token=APP_TOKEN, sumsub_secret_key=SECRET_KEY)

    async with SumsubClient.from_settings(settings) as sumsub:
        assert await sumsub.get_applicant_by_external_user_id(_eid("settings")) is None


# --- webhook authenticity --------------------------------------------------------------------------

BODY = b'{"applicantId":"5cb56e8e0a975a35f333cb83","type":"applicantReviewed"}'
WEBHOOK_SECRET = "webhook-secret"


@pytest.mark.parametrize("alg", sorted(WEBHOOK_DIGEST_ALGORITHMS))
def test_webhook_digest_verifies_for_each_algorithm(alg: str) -> None:
    digest = webhook_digest(BODY, WEBHOOK_SECRET, alg)

    assert digest == hmac.new(WEBHOOK_SECRET.encode(), BODY, WEBHOOK_DIGEST_ALGORITHMS[alg]).hexdigest()
    assert verify_webhook_digest(BODY, digest=digest, alg=alg, secret=WEBHOOK_SECRET)
    assert verify_webhook_digest(BODY, digest=digest.upper(), alg=alg, secret=WEBHOOK_SECRET)


def test_missing_alg_header_means_sha256() -> None:
    sha256 = hmac.new(WEBHOOK_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    sha1 = hmac.new(WEBHOOK_SECRET.encode(), BODY, hashlib.sha1).hexdigest()

    assert webhook_digest(BODY, WEBHOOK_SECRET) == sha256
    assert verify_webhook_digest(BODY, digest=sha256, alg=None, secret=WEBHOOK_SECRET)
    assert not verify_webhook_digest(BODY, digest=sha1, alg=None, secret=WEBHOOK_SECRET)


@pytest.mark.parametrize(
    ("body", "digest", "alg", "secret"),
    [
        (BODY, "0" * 64, "HMAC_SHA256_HEX", WEBHOOK_SECRET),
        (BODY, None, "HMAC_SHA256_HEX", WEBHOOK_SECRET),
        (BODY, "", "HMAC_SHA256_HEX", WEBHOOK_SECRET),
        (BODY, "valid", "HMAC_MD5_HEX", WEBHOOK_SECRET),
        (BODY.replace(b"Reviewed", b"Reset"), "valid", "HMAC_SHA256_HEX", WEBHOOK_SECRET),
        (BODY, "valid", "HMAC_SHA256_HEX", "another-secret"),
        (BODY, "valid", "HMAC_SHA1_HEX", WEBHOOK_SECRET),
        (BODY, "ü" * 64, "HMAC_SHA256_HEX", WEBHOOK_SECRET),
    ],
    ids=["wrong", "missing", "empty", "unknown-alg", "tampered-body", "wrong-secret", "alg-mismatch", "non-ascii"],
)
def test_webhook_digest_rejects(body: bytes, digest: str | None, alg: str, secret: str) -> None:
    if digest == "valid":
        digest = webhook_digest(BODY, WEBHOOK_SECRET, "HMAC_SHA256_HEX")

    assert verify_webhook_digest(body, digest=digest, alg=alg, secret=secret) is False
