"""`POST /webhooks/sumsub`: authenticate, store durably, answer; a relay in a worker delivers it.

The digest is checked over the raw bytes before anything is parsed; a forged or unsigned call changes
nothing. An authentic but unusable body is answered 400 and kept for ops. While PostgreSQL is down the
answer is 503 (Sumsub retries), never a 500.
"""

from __future__ import annotations

import hashlib

import asyncpg
import orjson
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

import db.inbox
from api.bodies import read_limited
from api.errors import error_response
from api.state import AppState
from db.pool import DATABASE_OUTAGES
from integrations.sumsub.webhooks import InvalidWebhook, parse_webhook, verify_webhook_digest, webhook_dedupe_key
from kit import metrics

log = structlog.get_logger("api.webhooks")


async def sumsub_webhook(request: Request) -> JSONResponse:
    state: AppState = request.app.state.services
    metrics.WEBHOOKS_RECEIVED.inc()
    body = await read_limited(request, state.settings.sumsub_webhook_max_bytes)
    if body is None:
        metrics.WEBHOOKS_REJECTED.labels(reason="too_large").inc()
        return error_response(413, "payload too large")
    if not verify_webhook_digest(
        body,
        digest=request.headers.get("x-payload-digest"),
        alg=request.headers.get("x-payload-digest-alg"),
        secret=state.settings.sumsub_webhook_secret,
    ):
        metrics.WEBHOOKS_REJECTED.labels(reason="digest").inc()
        return error_response(401, "invalid or missing X-Payload-Digest")
    try:
        return await _store(state, body)
    except DATABASE_OUTAGES as exc:
        # Nothing was stored: Sumsub retries a 5xx, so the webhook is not lost.
        metrics.WEBHOOKS_REJECTED.labels(reason="unavailable").inc()
        log.warning("webhook not stored: PostgreSQL unavailable", error_type=type(exc).__name__)
        return error_response(503, "temporarily unavailable; retry", {"Retry-After": "5"})


async def _store(state: AppState, body: bytes) -> JSONResponse:
    """Parses the authentic body and stores it once; a relay (in a worker) delivers it after the answer."""
    try:
        if b"\x00" in body or b"\\u0000" in body:
            raise InvalidWebhook("NUL characters are not accepted")  # PostgreSQL text cannot hold them
        payload = parse_webhook(orjson.loads(body))
    except (ValueError, RecursionError, InvalidWebhook) as exc:
        raw = {"raw": body.decode("utf-8", "replace").replace("\x00", "")}
        await db.inbox.store_webhook(
            state.pool, dedupe_key="sha256:" + hashlib.sha256(body).hexdigest(), payload=raw, outcome=f"rejected: {exc}"
        )
        metrics.WEBHOOKS_REJECTED.labels(reason="invalid").inc()
        return error_response(400, f"invalid webhook body: {exc}")
    dedupe_key = webhook_dedupe_key(payload, body)
    try:
        inbox_id = await db.inbox.store_webhook(state.pool, dedupe_key=dedupe_key, payload=payload)
    except asyncpg.DataError as exc:  # e.g. a lone surrogate escape PostgreSQL's jsonb refuses
        metrics.WEBHOOKS_REJECTED.labels(reason="invalid").inc()
        return error_response(400, f"invalid webhook body: {type(exc).__name__}")
    if inbox_id is None:
        metrics.WEBHOOKS_DUPLICATE.inc()
        return JSONResponse({"ok": True, "duplicate": True})
    state.inbox.stored()
    return JSONResponse({"ok": True})
