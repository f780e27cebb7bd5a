"""Injected latency for the emulators, so crash tests can catch a worker in the middle of a call.

`POST /_emulator/latency {"seconds": 1.5}` makes every API call wait that long before it is handled
(the request is still handled if the caller hangs up meanwhile, as a real server would).
"""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class InjectedLatency:
    """ASGI middleware delaying requests whose path starts with one of `prefixes`."""

    def __init__(self, app: ASGIApp, *, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes
        self.seconds = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.seconds > 0 and scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            await asyncio.sleep(self.seconds)
        await self.app(scope, receive, send)

    def route(self) -> Route:
        async def set_latency(request: Request) -> Response:
            try:
                seconds = float(json.loads(await request.body())["seconds"])
            except (ValueError, KeyError, TypeError):
                return JSONResponse({"error": 'body must be {"seconds": <number>}'}, status_code=400)
            self.seconds = max(0.0, seconds)
            return JSONResponse({"seconds": self.seconds})

        return Route("/_emulator/latency", set_latency, methods=["POST"])
