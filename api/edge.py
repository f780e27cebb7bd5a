"""The API's edge against slow clients: a deadline for a request's head and one for its body.

uvicorn times out an idle keep-alive connection, but not a client that sends its request a byte a
second, before or after its first byte: a thousand of those would hold a thousand sockets forever.
`HeadDeadlineHttpToolsProtocol` (and its h11 twin) closes a connection whose request line and headers are not complete within
`API_HEADER_TIMEOUT` of its opening (or of the previous response), answering 408; `BodyDeadline`
answers 408 to a request whose body is not complete within `API_BODY_TIMEOUT` of its start.
"""

from __future__ import annotations

import asyncio
from typing import Any, Self

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _HeadDeadline(asyncio.Protocol):
    """The deadline for each request's head, for either of uvicorn's HTTP protocols (mixed in before it).
    Set `head_timeout` on a subclass (`with_head_timeout`), as uvicorn instantiates the class itself."""

    head_timeout: float = 10.0
    # uvicorn's protocols have these; uvicorn starts a new cycle once a request line and headers are parsed.
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    @classmethod
    def with_head_timeout(cls, seconds: float) -> type[Self]:
        return type(cls.__name__, (cls,), {"head_timeout": seconds})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._disarm_once_the_head_is_in()

    def on_response_complete(self) -> None:
        if self._next_head_is_in():
            super().on_response_complete()  # type: ignore[misc]
            return
        self._arm()  # before: the next, pipelined request may be read within the call
        super().on_response_complete()  # type: ignore[misc]
        self._disarm_once_the_head_is_in()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _next_head_is_in(self) -> bool:
        return False

    def _arm(self) -> None:
        self._disarm()
        self._cycle_before = self.cycle
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_head_deadline", None) is not None:
            assert self._head_deadline is not None
            self._head_deadline.cancel()
            self._head_deadline = None

    def _disarm_once_the_head_is_in(self) -> None:
        if self._head_deadline is not None and self.cycle is not self._cycle_before:
            self._disarm()

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


class HeadDeadlineH11Protocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with a deadline for each request's head."""


class HeadDeadlineHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, C) with a deadline for each request's head: what the API runs."""

    def _next_head_is_in(self) -> bool:
        # httptools parses a pipelined request's head before the response ahead of it completes.
        return bool(self.pipeline)


class _BodyTooSlow(Exception):
    pass


class BodyDeadline:
    """Answers 408 when a request's body has not arrived whole within `seconds` of the request's start."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self._app = app
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self._seconds
        started = False

        async def receive_in_time() -> Message:
            # asyncio.timeout_at, not wait_for: no task made for every receive (3.11's wait_for makes one).
            try:
                async with asyncio.timeout_at(deadline):
                    return await receive()
            except TimeoutError:
                raise _BodyTooSlow from None

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive_in_time, tracking_send)
        except _BodyTooSlow:
            if not started:
                response = JSONResponse(
                    {"error": f"request body not received within {self._seconds:g} s"},
                    status_code=408,
                    headers={"Connection": "close"},
                )
                await response(scope, _nothing, send)


async def _nothing() -> Any:
    return {"type": "http.disconnect"}
