"""Prometheus metrics: the API's (HTTP and intake) and the worker's business metrics, each in its own registry.

The API serves `API_REGISTRY` on its own small HTTP server (`API_METRICS_ADDRESS`), never on its public
port; the worker serves `WORKER_REGISTRY` on its own small HTTP
server (`WORKER_BUSINESS_METRICS_ADDRESS`), beside the Temporal SDK's metrics (`WORKER_METRICS_ADDRESS`,
served by the SDK's Rust core, which cannot host Python metrics). Label values are small closed sets:
route templates, never raw paths; event types, never ids.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from starlette.routing import Mount

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED_ROUTE = "<unmatched>"
WEBHOOK_REJECTION_REASONS = ("digest", "too_large", "invalid")
# Registration to ACTIVE spans seconds (an automated check) to weeks (KYC_EXPIRES_AFTER is 30 days).
REGISTRATION_TO_ACTIVE_BUCKETS = (
    1,
    5,
    15,
    30,
    60,
    300,
    900,
    1800,
    3600,
    4 * 3600,
    12 * 3600,
    86400,
    3 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
)


disable_created_metrics()  # no `*_created` series beside every counter and histogram


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


API_REGISTRY = _registry()
WORKER_REGISTRY = _registry()

# --- API -------------------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
    registry=API_REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and status.",
    ["method", "route", "status"],
    registry=API_REGISTRY,
)
REGISTRATIONS = Counter(
    "customer_registrations",
    "customerRegister calls, by outcome (ok, or the error code: bad_user_input, conflict, service_unavailable, ...).",
    ["outcome"],
    registry=API_REGISTRY,
)
WEBHOOKS_RECEIVED = Counter(
    "sumsub_webhooks_received", "Sumsub webhook requests received (before any check).", registry=API_REGISTRY
)
READ_CACHE = Counter(
    "api_read_cache",
    "customer(id) reads the API could answer from memory (hit) or asked Strawberry for (miss); see api/read_cache.py.",
    ["result"],
    registry=API_REGISTRY,
)
WEBHOOKS_DUPLICATE = Counter(
    "sumsub_webhooks_duplicate",
    "Authentic Sumsub webhooks already in the inbox (acknowledged, not redelivered).",
    registry=API_REGISTRY,
)
WEBHOOKS_REJECTED = Counter(
    "sumsub_webhooks_rejected",
    "Sumsub webhooks refused, by reason: digest (401), too_large (413), invalid (400).",
    ["reason"],
    registry=API_REGISTRY,
)
for _reason in WEBHOOK_REJECTION_REASONS:
    WEBHOOKS_REJECTED.labels(reason=_reason)
REGISTRATIONS.labels(outcome="ok")

# --- worker ----------------------------------------------------------------------------------------------

CUSTOMER_EVENTS = Counter(
    "customer_events",
    "Customer events recorded (each once, however often the activity ran), by type.",
    ["event_type"],
    registry=WORKER_REGISTRY,
)
KYC_APPROVALS = Counter("kyc_approvals", "KYC reviews applied as approved (GREEN).", registry=WORKER_REGISTRY)
KYC_DECLINES = Counter(
    "kyc_declines", "KYC reviews applied as finally declined (RED, final).", registry=WORKER_REGISTRY
)
KYC_EXPIRIES = Counter("kyc_expiries", "Onboardings expired without a KYC verdict.", registry=WORKER_REGISTRY)
ONBOARDING_FAILURES = Counter(
    "onboarding_failures", "Onboardings that failed permanently (compensated, stage FAILED).", registry=WORKER_REGISTRY
)
ACTIVATIONS = Counter("customer_activations", "Customers that reached ACTIVE (onboarded).", registry=WORKER_REGISTRY)
REGISTRATION_TO_ACTIVE = Histogram(
    "customer_registration_to_active_seconds",
    "Time from registration to ACTIVE, in workflow time.",
    buckets=REGISTRATION_TO_ACTIVE_BUCKETS,
    registry=WORKER_REGISTRY,
)
EVENT_DELIVERY_ATTEMPTS = Counter(
    "event_delivery_attempts",
    "Webhook delivery attempts, by what followed: delivered, retrying or dead (dead-lettered).",
    ["outcome"],
    registry=WORKER_REGISTRY,
)
EVENT_DELIVERY_LAG = Histogram(
    "event_delivery_lag_seconds",
    "From a published event's time to the end of the attempt that delivered it.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 3600.0, 86400.0),
    registry=WORKER_REGISTRY,
)
_COUNTER_BY_EVENT = {
    "kyc.approved": KYC_APPROVALS,
    "kyc.declined": KYC_DECLINES,
    "kyc.expired": KYC_EXPIRIES,
    "onboarding.failed": ONBOARDING_FAILURES,
    "customer.activated": ACTIVATIONS,
}


def observe_customer_event(event_type: str, *, registered_at: datetime, occurred_at: datetime) -> None:
    """Counts one newly recorded customer event; call it only when the event row was actually inserted."""
    CUSTOMER_EVENTS.labels(event_type=event_type).inc()
    counter = _COUNTER_BY_EVENT.get(event_type)
    if counter is not None:
        counter.inc()
    if event_type == "customer.activated":
        REGISTRATION_TO_ACTIVE.observe(max((occurred_at - registered_at).total_seconds(), 0.0))


def serve_worker_metrics(address: str) -> tuple[WSGIServer, Thread]:
    """Serves WORKER_REGISTRY at http://ADDRESS/metrics from a daemon thread; `server.shutdown()` stops it."""
    return serve_metrics(address, WORKER_REGISTRY)


def serve_metrics(address: str, registry: CollectorRegistry) -> tuple[WSGIServer, Thread]:
    """Serves `registry` at http://ADDRESS/metrics from a daemon thread; `server.shutdown()` stops it."""
    host, port = split_address(address)
    return start_http_server(port, addr=host, registry=registry)


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9464`) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


# --- HTTP ------------------------------------------------------------------------------------------------


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by method, route template (never the raw path) and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # an exception before the response started is answered 500 further out

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            count, duration = _http_children(scope["method"], _route_template(scope, root_path), status)
            count.inc()
            duration.observe(time.perf_counter() - started)


@functools.lru_cache(maxsize=1024)
def _http_children(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """The two series of one (method, route, status), looked up once (`labels` takes a lock and builds a key)."""
    labels = {"method": method, "route": route, "status": str(status)}
    return HTTP_REQUESTS.labels(**labels), HTTP_REQUEST_DURATION.labels(**labels)


def _route_template(scope: Scope, root_path: str) -> str:
    """The matched route's template, with the prefix of any Mount it was found under."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    prefix = scope.get("root_path", "")[len(root_path) :]
    if isinstance(route, Mount):  # matched the mount, but no route inside it
        return f"{prefix}/{{path}}" if prefix else f"{route.path}/{{path}}"
    return prefix + str(getattr(route, "path", UNMATCHED_ROUTE))
