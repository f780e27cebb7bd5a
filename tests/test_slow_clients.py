"""Slow clients cannot hold the API: a request's head and its body each have a deadline (408).

A second API process of the session stack runs with deadlines of 1 s (head) and 2 s (body), the
settings a bank would lower or raise; the test holds hundreds of connections that send a byte at a
time and finds each one answered 408 and closed, while ordinary requests are served meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from dev.extra import extra_api
from dev.stack import DevStack

SLOW_CONNECTIONS = 300
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n"  # never ends with the blank line


@pytest.fixture
async def strict_api(stack: DevStack) -> AsyncIterator[str]:
    async with extra_api(stack, {"API_HEADER_TIMEOUT": "1", "API_BODY_TIMEOUT": "2"}) as url:
        yield url


async def trickle(port: int, data: bytes, *, every: float = 0.25) -> bytes:
    """Sends `data` a byte at a time until the server answers or closes; returns what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def send() -> None:
            for byte in data:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(every)

        sender = asyncio.create_task(send())
        try:
            return await asyncio.wait_for(reader.read(), timeout=15)  # until EOF
        finally:
            sender.cancel()
    finally:
        writer.close()


async def test_slow_heads_are_answered_408_and_closed_while_others_are_served(strict_api: str) -> None:
    port = int(strict_api.rsplit(":", 1)[1])
    slow = [asyncio.create_task(trickle(port, HEAD * 4)) for _ in range(SLOW_CONNECTIONS)]
    async with httpx.AsyncClient(base_url=strict_api, timeout=10) as http:
        served = [(await http.get("/healthz")).status_code for _ in range(20)]
    answers = await asyncio.gather(*slow)
    assert served == [200] * 20
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), {a[:40] for a in answers}


async def test_a_slow_body_is_408_and_a_slow_but_timely_client_is_served(strict_api: str) -> None:
    port = int(strict_api.rsplit(":", 1)[1])
    head = b"POST /webhooks/sumsub HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()

        async def body_a_byte_at_a_time() -> None:
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.25)

        sender = asyncio.create_task(body_a_byte_at_a_time())
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=15)
        sender.cancel()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer

    timely = await trickle(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", every=0.005)
    assert timely.startswith(b"HTTP/1.1 200"), timely[:80]


def test_the_api_runs_with_the_head_deadline_protocol() -> None:
    """`python -m api.main` builds uvicorn's config through `server_config`, with the deadlines set."""
    from api.main import server_config
    from kit.settings import Settings

    config = server_config(object(), Settings(api_header_timeout=3.5))  # type: ignore[arg-type]
    assert getattr(config.http, "head_timeout", None) == 3.5


async def test_the_head_deadline_applies_again_after_each_response_on_a_kept_alive_connection(strict_api: str) -> None:
    port = int(strict_api.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert first.startswith(b"HTTP/1.1 200"), first
        await reader.readexactly(int(first.split(b"content-length: ")[1].split(b"\r\n")[0]))

        async def second_head_a_byte_at_a_time() -> None:
            for byte in HEAD * 4:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.25)

        sender = asyncio.create_task(second_head_a_byte_at_a_time())
        try:
            second = await asyncio.wait_for(reader.read(), timeout=15)
        finally:
            sender.cancel()
    finally:
        writer.close()
    assert second.startswith(b"HTTP/1.1 408"), second[:60]
