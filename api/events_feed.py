"""`GET /events`: the published lifecycle events as CloudEvents, in transaction order, for a consumer that pulls.

A plain HTTP endpoint rather than a GraphQL connection: consumers of an event feed are machines that
poll with a cursor (as they would a Kafka topic or an Atom feed), and CloudEvents' structured JSON is
the format they already parse; nothing in it needs GraphQL's selection. Authorised by a token with the
`events` role. Events come in the order of their transactions' ids, and only once every older transaction
has ended (so none is ever skipped); a consumer orders one customer's events by `sequence`. A transaction
left open anywhere in the database holds the feed back until it ends. `after` is the `next` of the previous page; `types` (repeatable or comma-separated)
narrows the feed; `limit` is 1-500 (default 100).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import db.events
from api.auth import authorize
from api.errors import error_response
from api.state import AppState
from db.pool import DATABASE_OUTAGES
from domain.events import cloud_event_json, unknown_event_types

EVENTS_ROLE = "events"
MAX_LIMIT = 500


def encode_cursor(cursor: tuple[int, int]) -> str:
    return base64.urlsafe_b64encode(f"{cursor[0]}:{cursor[1]}".encode()).decode()


def decode_cursor(value: str) -> tuple[int, int]:
    txid, _, position = base64.urlsafe_b64decode(value.encode("ascii")).decode().partition(":")
    cursor = int(txid), int(position)
    if not all(0 <= part < 2**63 for part in cursor):
        raise ValueError("cursor out of range")
    return cursor


def cloud_event(event: db.events.LifecycleEvent, source: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(
        cloud_event_json(
            id=event.id,
            source=source,
            type=event.type,
            customer_id=event.customer_id,
            time=event.time,
            sequence=event.sequence,
            data=event.data,
        )
    )
    return parsed


async def events_feed(request: Request) -> Response:
    services: AppState = request.app.state.services
    caller = await authorize(request, services.verifier, EVENTS_ROLE, what="the event feed")
    if isinstance(caller, Response):
        return caller
    params = request.query_params
    try:
        after = decode_cursor(params["after"]) if params.get("after") else None
    except (ValueError, binascii.Error, UnicodeError):
        return error_response(400, "after: not a cursor from this feed")
    types = [t for value in params.getlist("types") for t in value.split(",") if t] or None
    if unknown := unknown_event_types(types or ()):
        return error_response(400, f"types: unknown event types {unknown}")
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        return error_response(400, "limit: not a number")
    if not 1 <= limit <= MAX_LIMIT:
        return error_response(400, f"limit: between 1 and {MAX_LIMIT}")
    try:
        events = await db.events.feed(services.pool, after=after, types=types, limit=limit)
    except DATABASE_OUTAGES:
        return error_response(503, "temporarily unavailable; retry", {"Retry-After": "5"})
    source = services.settings.events_source
    next_cursor = encode_cursor(events[-1].cursor) if events else params.get("after")
    return JSONResponse({"events": [cloud_event(event, source) for event in events], "next": next_cursor})
