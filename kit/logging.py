"""structlog set-up shared by every process: JSON lines in production, readable lines in `make dev`.

Every line carries its context: the API binds a request id per request (`RequestIdMiddleware`), the
worker binds customer, workflow, run and activity per activity execution (`ActivityLogContext`), and
workflow code logs through `workflow.logger` (silent on replay), whose workflow details become fields.
Standard-library records (uvicorn, the Temporal SDK, asyncpg) go through the same chain.

`redact` is the last step before rendering: a safety net that masks e-mail addresses, bearer tokens,
JWTs, PostgreSQL key details and values under personal-data keys, wherever they appear in an event.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

REQUEST_ID_HEADER = "x-request-id"
WORKFLOW_ID_PREFIX = "customer-"  # domain.customer.workflow_id_for
REDACTED = "[REDACTED]"
# Values under these keys are personal data or secrets, whatever they look like.
SENSITIVE_KEYS = frozenset(
    {
        "email",
        "email_normalized",
        "new_email",
        "old_email",
        "telegram",
        "telegram_handle",
        "phone",
        "phone_number",
        "first_name",
        "last_name",
        "full_name",
        "given_name",
        "family_name",
        "middle_name",
        "company_name",
        "date_of_birth",
        "dob",
        "nationality",
        "address",
        "addresses",
        "legal_address",
        "street",
        "street_address",
        "postal_address",
        "post_code",
        "formatted_address",
        "fixed_info",
        "password",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "authorization",
    }
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+(?:@|%40)((?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,})")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[A-Za-z0-9\-._~+/]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]*)?")
# PostgreSQL's unique-violation detail: `Key (email_normalized)=(ada@example.com) already exists.`
_PG_KEY_DETAIL = re.compile(r"(Key \([^)]*\)=\()[^)]*(\))")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
_MAX_DEPTH = 6
_log = structlog.get_logger("api")


def redact_text(text: str) -> str:
    """Masks e-mail addresses (keeping the domain), bearer tokens, JWTs and PostgreSQL key values."""
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _EMAIL.sub(lambda m: f"***@{m.group(1)}", text)
    return _PG_KEY_DETAIL.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(2)}", text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return {
            key: REDACTED
            if str(key).lower() in SENSITIVE_KEYS and value[key] is not None
            else _redact_value(value[key], depth + 1)
            for key in value
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(item, depth + 1) for item in value]
    return redact_text(str(value))  # models, exceptions, dates: rendered as text anyway


def redact(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the personal-data safety net over every key and value of the event."""
    redacted: dict[str, Any] = _redact_value(dict(event_dict))  # a dict in is a dict out
    return redacted


def _lift_temporal_extras(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`workflow.logger` / `activity.logger` put their details under one key; make them plain fields."""
    for key in ("temporal_workflow", "temporal_activity"):
        details = event_dict.pop(key, None)
        if isinstance(details, dict):
            for name in ("workflow_id", "run_id", "workflow_type", "update_name", "update_id"):
                if details.get(name) is not None:
                    event_dict.setdefault(name, details[name])
            if details.get("workflow_run_id") is not None:
                event_dict.setdefault("run_id", details["workflow_run_id"])
            if details.get("activity_type") is not None:
                event_dict.setdefault("activity", details["activity_type"])
    workflow_id = event_dict.get("workflow_id")
    if isinstance(workflow_id, str) and workflow_id.startswith(WORKFLOW_ID_PREFIX):
        event_dict.setdefault("customer_id", workflow_id.removeprefix(WORKFLOW_ID_PREFIX))
    event_dict.pop("color_message", None)  # uvicorn's duplicate of the message with ANSI colours
    event_dict.pop("temporal_log", None)  # the SDK core's raw record; its fields are already in the message
    return event_dict


def configure_logging(*, fmt: str = "json", level: str = "INFO") -> None:
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _lift_temporal_extras],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings become log lines too, not bare text on stderr
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- the API: one request id per request ----------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def request_id_from(header: str | None) -> str:
    """The caller's `X-Request-Id` when it is a plain token (letters, digits, `._:-`, at most 128), else a new one."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


# The request's id, for every log line written while it is served (`add_request_id`). One variable of our own,
# not structlog's bound_contextvars: that made a context manager and looked up its variables on every request,
# 8% of the API's CPU per webhook (py-spy).
_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def add_request_id(_logger: Any, _method: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    """structlog processor: the id of the request being served, if any."""
    request_id = _REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


class RequestIdMiddleware:
    """Binds `request_id` to every log line of the request and echoes it as `X-Request-Id` on every response.

    An unhandled error is logged here, with the request id, and answered 500 with the header (re-raised only
    when the response had already started and cannot be replaced)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((value for name, value in scope["headers"] if name == REQUEST_ID_HEADER.encode()), None)
        request_id = request_id_from(raw.decode("latin-1") if raw is not None else None)
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        bound = _REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            _log.exception("unhandled error", method=scope.get("method"), path=scope.get("path"))
            if started:
                raise
            body = b'{"error":"internal server error"}'
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            _REQUEST_ID.reset(bound)


# --- the worker: who an activity works for ---------------------------------------------------------------


class ActivityLogContext(Interceptor):
    """Worker interceptor: binds customer_id, workflow_id, run_id, activity and attempt to every log line an
    activity execution writes (structlog contextvars, reset when the execution ends)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityLogContextInbound(next)


class _ActivityLogContextInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        context: dict[str, Any] = {
            "activity": info.activity_type,
            "activity_id": info.activity_id,
            "attempt": info.attempt,
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
        }
        if info.workflow_id and info.workflow_id.startswith(WORKFLOW_ID_PREFIX):
            context["customer_id"] = info.workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
        with structlog.contextvars.bound_contextvars(**context):
            return await self.next.execute_activity(input)
