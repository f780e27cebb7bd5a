"""Observability: request ids on every API response, Prometheus metrics from the API and the worker,
structured JSON logs with their context bound, and no personal data or tokens in any log."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
import structlog.testing
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router

from dev.stack import DevStack
from integrations.sumsub.webhooks import webhook_digest
from kit import metrics
from kit.logging import REDACTED, RequestIdMiddleware, add_request_id, redact, redact_text, request_id_from
from tests.support.graphql import REGISTER, fill_in, graphql, press, register, wait_for_stage

WEBHOOK_SECRET = "dev-sumsub-webhook-secret"
# Temporal SDK metric families the worker must serve (names with PrometheusConfig's suffixes on).
SDK_FAMILIES = ("temporal_workflow_task", "temporal_activity_execution")

# --- helpers ------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as for a counter that never moved); label subsets are summed."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Retries an async check until it stops raising AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def signed(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Payload-Digest": webhook_digest(body, WEBHOOK_SECRET),
        "X-Payload-Digest-Alg": "HMAC_SHA256_HEX",
    }


def log_lines(stack: DevStack, name: str) -> list[str]:
    assert stack.log_dir is not None
    return [line for line in (stack.log_dir / f"{name}.log").read_text(errors="replace").splitlines() if line.strip()]


def json_lines(stack: DevStack, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_lines(stack, name)]


async def onboard_with_telegram(
    portal: httpx.AsyncClient, email: str, telegram: str, person: dict[str, str] | None = None
) -> dict[str, Any]:
    """Onboards; with `person`, its names are provided at registration and the whole of it is typed into
    the WebSDK page, so the verified profile passes through the worker too."""
    names = {key: person[key] for key in ("firstName", "lastName")} if person else {}
    body = await graphql(
        portal,
        REGISTER,
        {"input": {"email": email, "customerType": "INDIVIDUAL", "telegramHandle": telegram, **names}},
    )
    assert "errors" not in body, body
    customer = body["data"]["customerRegister"]["customer"]
    waiting = await wait_for_stage(portal, customer["id"], "AWAITING_KYC")
    if person:
        await fill_in(waiting["kyc"]["verificationUrl"], dict(person))
    await press(waiting["kyc"]["verificationUrl"], "submit")
    await wait_for_stage(portal, customer["id"], "KYC_IN_REVIEW")
    await press(waiting["kyc"]["verificationUrl"], "approve")
    return await wait_for_stage(portal, customer["id"], "ONBOARDED")


# --- request ids -----------------------------------------------------------------------------------------


async def test_every_api_response_carries_a_request_id_and_echoes_a_given_one(stack: DevStack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        responses = [
            await http.get("/healthz"),
            await http.get("/readyz"),
            await http.get("/metrics"),  # 404: not on the public port
            await http.get("/no-such-route"),  # 404
            await http.delete("/healthz"),  # 405
            await http.post("/graphql", json={"query": "{ __typename }"}),  # 401
            await http.post("/webhooks/sumsub", content=b"{}"),  # 401
            await http.options(
                "/codec/decode", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
            ),
        ]
        generated = [r.headers.get("x-request-id") for r in responses]
        assert all(g and len(g) == 32 for g in generated), [
            (r.request.url.path, r.status_code, r.headers) for r in responses
        ]
        assert len(set(generated)) == len(generated), "each request gets its own id"

        given = "req-" + uuid.uuid4().hex
        assert (await http.get("/healthz", headers={"X-Request-Id": given})).headers["x-request-id"] == given
        response = await http.post("/graphql", json={"query": "{ __typename }"}, headers={"X-Request-Id": given})
        assert response.status_code == 401 and response.headers["x-request-id"] == given
        # Not a plain token (spaces, too long): replaced by a fresh id rather than copied into logs and headers.
        for insane in ("two words", "x" * 200, "<script>"):
            echoed = (await http.get("/healthz", headers={"X-Request-Id": insane})).headers["x-request-id"]
            assert echoed != insane and len(echoed) == 32
        assert len((await http.get("/healthz")).headers.get_list("x-request-id")) == 1


def in_process(app: Starlette) -> httpx.AsyncClient:
    """An HTTP client calling the ASGI app directly; an unhandled error comes back as the app's 500."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://app")


async def test_the_request_id_is_bound_to_log_context_and_survives_an_unhandled_error() -> None:
    async def context(request: Request) -> Response:
        structlog.get_logger("test").info("inside")
        return JSONResponse({})

    async def boom(request: Request) -> Response:
        raise RuntimeError("unexpected")

    app = Starlette(
        routes=[Route("/context", context), Route("/boom", boom)], middleware=[Middleware(RequestIdMiddleware)]
    )
    async with in_process(app) as client:
        with structlog.testing.capture_logs(processors=[add_request_id]) as captured:
            response = await client.get("/context", headers={"X-Request-Id": "abc-123"})
            failed = await client.get("/boom", headers={"X-Request-Id": "abc-124"})
            structlog.get_logger("test").info("after")
    assert response.headers["x-request-id"] == "abc-123"
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "abc-124"
    inside, error, after = captured
    assert inside["event"] == "inside" and inside["request_id"] == "abc-123"
    assert error["event"] == "unhandled error" and error["request_id"] == "abc-124" and error["path"] == "/boom"
    assert after["event"] == "after" and "request_id" not in after  # unbound once the request ended


def test_request_ids_are_taken_only_when_plain() -> None:
    assert request_id_from("0f1e2d3c-aaaa:b.c_d") == "0f1e2d3c-aaaa:b.c_d"
    for bad in (None, "", "-leading-dash", "new\nline", "a" * 129, "ümlaut"):
        assert request_id_from(bad) != bad


# --- redaction -------------------------------------------------------------------------------------------


def test_redaction_masks_emails_tokens_and_database_key_details() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"
    text = redact_text(
        f"ada.lovelace@example.com; GET /users?email=ada.lovelace%40example.com; Authorization: Bearer {jwt}; "
        "authorization=bearer abc.def-ghi; token {jwt}; Key (telegram_handle)=(ada_lovelace) already exists."
    )
    for secret in ("ada.lovelace", "eyJ", "abc.def-ghi", "ada_lovelace"):
        assert secret not in text, text
    assert "***@example.com" in text and "Key (telegram_handle)=([REDACTED])" in text


def test_the_redaction_processor_covers_every_value_and_personal_data_keys() -> None:
    event = redact(
        None,
        "info",
        {
            "event": "sent to jane@example.org",
            "email": "jane@example.org",
            "telegram_handle": "jane_tg",
            "nested": {"phone": "+441234567890", "list": ["x jane@example.org", 3], "ok": "ACTIVE"},
            "exception": "Traceback ...\nasyncpg.UniqueViolationError: Key (email_normalized)=(jane@example.org)",
            "count": 2,
            "error": ValueError("Bearer abcdef.ghijk"),
        },
    )
    rendered = json.dumps(event)
    for secret in ("jane@", "jane_tg", "+441234567890", "abcdef.ghijk"):
        assert secret not in rendered, rendered
    assert event["email"] == event["telegram_handle"] == event["nested"]["phone"] == REDACTED
    assert event["count"] == 2 and event["nested"]["ok"] == "ACTIVE"


# --- metrics: unit ---------------------------------------------------------------------------------------


async def test_http_metrics_label_route_templates_not_raw_paths() -> None:
    async def item(request: Request) -> Response:
        return Response("ok")

    inner = Router(routes=[Route("/items/{item_id}", item)])
    app = Starlette(
        routes=[Route("/things/{thing_id}", item), Mount("/inner", app=inner)],
        middleware=[Middleware(metrics.HttpMetricsMiddleware)],
    )
    before = parse_metrics(generate_latest(metrics.API_REGISTRY).decode())
    async with in_process(app) as client:
        for path in ("/things/42", "/inner/items/7", "/inner/nothing", "/nowhere/at/all"):
            await client.get(path)
    after = parse_metrics(generate_latest(metrics.API_REGISTRY).decode())

    def delta(route: str, status: str) -> float:
        name = "http_requests_total"
        return value(after, name, route=route, status=status) - value(before, name, route=route, status=status)

    assert delta("/things/{thing_id}", "200") == 1
    assert delta("/inner/items/{item_id}", "200") == 1
    assert delta("/inner/{path}", "404") == 1
    assert delta(metrics.UNMATCHED_ROUTE, "404") == 1
    assert not any("/things/42" in str(labels) for (_, labels) in after)


def test_registration_to_active_is_observed_in_workflow_time() -> None:
    before = parse_metrics(generate_latest(metrics.WORKER_REGISTRY).decode())
    registered = datetime(2030, 1, 1, tzinfo=UTC)
    metrics.observe_customer_event(
        "customer.activated", registered_at=registered, occurred_at=registered + timedelta(hours=2)
    )
    metrics.observe_customer_event("kyc.approved", registered_at=registered, occurred_at=registered)
    after = parse_metrics(generate_latest(metrics.WORKER_REGISTRY).decode())
    name = "customer_registration_to_active_seconds"
    assert value(after, f"{name}_sum") - value(before, f"{name}_sum") == 7200
    assert value(after, f"{name}_bucket", le="3600.0") == value(before, f"{name}_bucket", le="3600.0")
    assert value(after, f"{name}_bucket", le="14400.0") - value(before, f"{name}_bucket", le="14400.0") == 1
    assert value(after, "kyc_approvals_total") - value(before, "kyc_approvals_total") == 1
    assert (
        value(after, "customer_events_total", event_type="customer.activated")
        - value(before, "customer_events_total", event_type="customer.activated")
        == 1
    )


# --- metrics: the running stack --------------------------------------------------------------------------


async def test_api_metrics_count_requests_registrations_and_webhooks(
    stack: DevStack, portal: httpx.AsyncClient
) -> None:
    metrics_url = stack.api_metrics_url  # apart from the public port, where /metrics is not served
    async with httpx.AsyncClient(base_url=stack.api_url) as public:
        assert (await public.get("/metrics")).status_code == 404
    before = await scrape(metrics_url)
    customer = await register(portal, f"metrics-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")

    # An authentic webhook for no running customer (stored, then settled as undeliverable), posted twice.
    body, headers = signed(
        {
            "type": "applicantPending",
            "externalUserId": str(uuid.uuid4()),
            "applicantId": "a" * 24,
            "correlationId": f"req-metrics-{uuid.uuid4().hex}",
            "createdAtMs": "2030-01-01 00:00:00.000",
        }
    )
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.post("/webhooks/sumsub", content=body, headers=headers)).json() == {"ok": True}
        assert (await http.post("/webhooks/sumsub", content=body, headers=headers)).json()["duplicate"] is True
        forged = {**headers, "X-Payload-Digest": webhook_digest(body, "not-the-secret")}
        assert (await http.post("/webhooks/sumsub", content=body, headers=forged)).status_code == 401
        junk, junk_headers = b"not json", {"X-Payload-Digest": webhook_digest(b"not json", WEBHOOK_SECRET)}
        assert (await http.post("/webhooks/sumsub", content=junk, headers=junk_headers)).status_code == 400
        huge = b" " * (256 * 1024 + 1)
        assert (await http.post("/webhooks/sumsub", content=huge, headers=headers)).status_code == 413
    after = await scrape(metrics_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert customer["id"]
    assert delta("customer_registrations_total", outcome="ok") >= 1
    assert delta("sumsub_webhooks_received_total") >= 5
    assert delta("sumsub_webhooks_duplicate_total") >= 1
    assert delta("sumsub_webhooks_rejected_total", reason="digest") == 1
    assert delta("sumsub_webhooks_rejected_total", reason="invalid") == 1
    assert delta("sumsub_webhooks_rejected_total", reason="too_large") == 1
    assert delta("http_requests_total", method="POST", route="/graphql", status="200") >= 1
    assert delta("http_requests_total", method="POST", route="/webhooks/sumsub", status="401") == 1
    assert delta("http_requests_total", method="POST", route="/webhooks/sumsub", status="200") >= 2
    assert delta("http_request_duration_seconds_count", route="/webhooks/sumsub") >= 5
    assert value(after, "process_cpu_seconds_total") > 0
    # Worker-side metrics live in the worker, not here.
    assert not any(name.startswith("kyc_") for name, _ in after)


async def test_worker_serves_temporal_sdk_and_business_metrics(stack: DevStack, portal: httpx.AsyncClient) -> None:
    before = await scrape(stack.worker_business_metrics_url)
    await onboard_with_telegram(
        portal, f"worker-metrics-{uuid.uuid4().hex[:8]}@example.com", f"wm_{uuid.uuid4().hex[:8]}"
    )

    async def business_metrics_moved() -> None:
        after = await scrape(stack.worker_business_metrics_url)
        for name in (
            "kyc_approvals_total",
            "customer_activations_total",
            "customer_registration_to_active_seconds_count",
        ):
            assert value(after, name) - value(before, name) >= 1, name
        assert value(after, "customer_events_total", event_type="customer.registered") > value(
            before, "customer_events_total", event_type="customer.registered"
        )
        assert value(after, "customer_registration_to_active_seconds_sum") > value(
            before, "customer_registration_to_active_seconds_sum"
        )

    await eventually(business_metrics_moved)

    sdk = await scrape(stack.worker_metrics_url)
    names = {name for name, _ in sdk}
    for family in SDK_FAMILIES:
        assert any(name.startswith(family) for name in names), (family, sorted(names)[:50])
    assert value(sdk, "temporal_activity_execution_latency_seconds_count", activity_type="record_change") > 0


# --- logs ------------------------------------------------------------------------------------------------


async def test_logs_are_json_lines_with_customer_and_workflow_bound(stack: DevStack, portal: httpx.AsyncClient) -> None:
    customer = await onboard_with_telegram(
        portal, f"logs-{uuid.uuid4().hex[:8]}@example.com", f"lg_{uuid.uuid4().hex[:8]}"
    )
    workflow_id = customer["onboarding"]["workflowId"]

    async def activity_and_workflow_lines_written() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        ours = [line for line in json_lines(stack, "worker") if line.get("customer_id") == customer["id"]]
        recorded = [line for line in ours if line["event"] == "customer event recorded"]
        assert "customer.activated" in {line["event_type"] for line in recorded}
        stages = [line for line in ours if line["event"] == "onboarding stage changed"]
        assert "ONBOARDED" in {line["to_stage"] for line in stages}
        return recorded, stages

    recorded, stages = await eventually(activity_and_workflow_lines_written)
    for line in recorded:
        assert line["activity"] == "record_change" and line["workflow_id"] == workflow_id and line["run_id"]
        assert line["level"] == "info" and line["timestamp"].endswith("Z")
    for line in stages:  # from workflow.logger: workflow details as fields, not appended to the message
        assert line["workflow_id"] == workflow_id and line["run_id"] and line["workflow_type"] == "CustomerWorkflow"
        assert line["event"] == "onboarding stage changed"
    # Replay-safe: each stage change is logged once, although the worker replays on every workflow task.
    assert len([line for line in stages if line["to_stage"] == "ONBOARDED"]) == 1
    for name in ("worker", "api"):
        for line in log_lines(stack, name):
            parsed = json.loads(line)  # every line: a JSON object with the standard fields
            assert {"event", "level", "timestamp"} <= set(parsed), line


async def test_no_log_holds_an_email_telegram_handle_or_token(stack: DevStack, portal: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex[:10]
    local_part, telegram = f"piitest.{marker}", f"tg_pii_{marker}"
    email = f"{local_part}@example.net"
    # Names, date of birth and address: provided at registration, typed into the WebSDK page, verified.
    person = {
        "firstName": f"Firstpii{marker}",
        "lastName": f"Lastpii{marker}",
        "middleName": f"Middlepii{marker}",
        "dob": "1971-03-" + str(10 + int(marker[:2], 16) % 18),
        "address.street": f"{marker} Streetpii Road",
        "address.town": f"Townpii{marker}",
    }
    customer = await onboard_with_telegram(portal, email, telegram, person)
    # Paths that echo input back: the same email registered again, a telegram handle that is taken.
    await register(portal, email.upper(), "INDIVIDUAL")
    await portal.post(
        "/graphql",
        json={
            "query": "mutation R($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id } } }",
            "variables": {
                "input": {
                    "email": f"other.{marker}@example.net",
                    "customerType": "INDIVIDUAL",
                    "telegramHandle": telegram,
                }
            },
        },
    )
    token = portal.headers["Authorization"].removeprefix("Bearer ").strip()

    async def last_activity_line_written() -> None:  # the activation's audit row, recorded after ONBOARDED
        assert any(
            line.get("customer_id") == customer["id"] and line.get("event_type") == "customer.activated"
            for line in json_lines(stack, "worker")
        )

    await eventually(last_activity_line_written)

    assert stack.log_dir is not None
    logs = sorted(stack.log_dir.glob("*.log"))
    assert {"api.log", "worker.log"} <= {p.name for p in logs}
    secrets = {
        "email": email,
        "local part": local_part,
        "telegram handle": telegram,
        "portal token": token,
        "token signature": token.rsplit(".", 1)[-1],
        "first name": person["firstName"],
        "last name": person["lastName"],
        "middle name": person["middleName"],
        "date of birth": person["dob"],
        "street": person["address.street"],
        "town": person["address.town"],
    }
    leaks = [
        (path.name, what)
        for path in logs
        for what, secret in secrets.items()
        if secret.lower() in path.read_text(errors="replace").lower()
    ]
    assert not leaks, leaks
    # The lines about this customer are there, only without contact data.
    assert any(line.get("customer_id") == customer["id"] for line in json_lines(stack, "worker"))


# --- tracing (optional, OTEL_ENABLED) ---------------------------------------------------------------------


def test_finished_spans_are_written_as_log_lines() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from kit.tracing import LogSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(LogSpanExporter()))
    with structlog.testing.capture_logs() as captured:
        with provider.get_tracer("test").start_as_current_span("RunWorkflow:CustomerWorkflow"):
            with provider.get_tracer("test").start_as_current_span("StartActivity:record_change"):
                pass
    provider.shutdown()
    child, parent = captured
    assert child["event"] == parent["event"] == "span finished"
    assert (child["span_name"], parent["span_name"]) == ("StartActivity:record_change", "RunWorkflow:CustomerWorkflow")
    assert child["trace_id"] == parent["trace_id"] and child["parent_span_id"] == parent["span_id"]
    assert parent["parent_span_id"] is None and child["duration_ms"] >= 0
