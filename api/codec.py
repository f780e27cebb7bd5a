"""The codec server for the Temporal Web UI: `POST /codec/decode` and `POST /codec/encode`.

Payloads in Temporal are encrypted (`kit.codec`); the UI shows them in clear only by sending
them here from the browser. Bodies and answers are `{"payloads": [...]}` in protobuf JSON (bytes in
base64). Only the UI's origins (`TEMPORAL_UI_ORIGIN`, comma-separated: the dev server's UI answers
as both `http://127.0.0.1:8233` and `http://localhost:8233`) may call from a browser (CORS, with
credentials). With `CODEC_AUTH_REQUIRED` (the default) a call needs a bearer token with the `ops`
role: 401 without a valid token, 403 without the role. Malformed bodies are 400, payloads that do not
decrypt (unknown key id, tampered) 422.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from google.protobuf import json_format
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp
from temporalio.api.common.v1 import Payload, Payloads

from api.auth import authorize
from api.bodies import read_limited
from api.errors import error_response
from api.state import AppState
from kit.codec import EncryptionCodec, PayloadDecryptionError, parse_keys
from kit.settings import Settings

ALLOWED_HEADERS = ("X-Namespace", "Content-Type", "Authorization")
CODEC_ROLE = "ops"
MAX_BODY_BYTES = 8 * 1024 * 1024  # a UI request carries one event's payloads (each at most 2 MB)
PREFLIGHT_MAX_AGE_SECONDS = 600

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


def codec_app(settings: Settings) -> ASGIApp:
    """The `/codec` routes, to mount in the API; raises KeyConfigError on bad PAYLOAD_ENCRYPTION_KEYS."""
    parse_keys(settings.payload_encryption_keys)  # a bad value stops the start, not the first request
    endpoints = _CodecEndpoints(settings.codec_auth_required)
    router = Router(
        routes=[
            Route("/decode", endpoints.decode, methods=["POST"]),
            Route("/encode", endpoints.encode, methods=["POST"]),
        ]
    )
    return CORSMiddleware(
        router,
        allow_origins=ui_origins(settings),
        allow_methods=["POST"],
        allow_headers=ALLOWED_HEADERS,
        allow_credentials=True,
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
    )


def ui_origins(settings: Settings) -> list[str]:
    """TEMPORAL_UI_ORIGIN as a list: comma-separated origins, spaces and a trailing slash ignored."""
    return [origin.strip().rstrip("/") for origin in settings.temporal_ui_origin.split(",") if origin.strip()]


class _CodecEndpoints:
    def __init__(self, auth_required: bool) -> None:
        self._auth_required = auth_required

    async def decode(self, request: Request) -> Response:
        codec = _codec(request)  # None: encryption is off, payloads pass through
        return await self._handle(request, codec.decode if codec else _unchanged)

    async def encode(self, request: Request) -> Response:
        # Without a workflow's context: the UI's encode (a signal it sends, say) uses the master key.
        codec = _codec(request)
        return await self._handle(request, codec.encode if codec else _unchanged)

    async def _handle(self, request: Request, transform: Transform) -> Response:
        refused = await self._refuse(request)
        if refused is not None:
            return refused
        body = await read_limited(request, MAX_BODY_BYTES)
        if body is None:
            return error_response(413, "body too large")
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, ValueError) as exc:
            return error_response(400, f'body is not {{"payloads": [...]}} in protobuf JSON: {exc}')
        try:
            result = Payloads(payloads=await transform(payloads.payloads))
        except PayloadDecryptionError as exc:
            return error_response(422, str(exc))
        return JSONResponse(json_format.MessageToDict(result, always_print_fields_with_no_presence=True))

    async def _refuse(self, request: Request) -> Response | None:
        """401 or 403 unless the caller may use the codec (or auth is off, on a loopback dev stack)."""
        if not self._auth_required:
            return None
        services: AppState = request.app.state.services
        caller = await authorize(request, services.verifier, CODEC_ROLE, what="the codec")
        return caller if isinstance(caller, Response) else None


def _codec(request: Request) -> EncryptionCodec | None:
    """The API's codec: the master keys and the customers' own keys (from PostgreSQL, cached)."""
    services: AppState = request.app.state.services
    return services.codec


async def _unchanged(payloads: Sequence[Payload]) -> list[Payload]:
    return list(payloads)
