"""db.pool's connections go back to the pool without the default reset query (a round trip on every
release, 9% of the API's CPU under webhook intake), and still without an open transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

import db.pool
from dev.stack import DevStack


@pytest_asyncio.fixture
async def one_connection(stack: DevStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.pool.create_pool(stack.child_env["DATABASE_URL"], size=1)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_released_connection_is_not_reset_by_a_query(one_connection: asyncpg.Pool) -> None:
    # A session setting survives the release only if no `RESET ALL` (the default reset) ran.
    await one_connection.execute("SET application_name = 'kept-by-the-pool'")
    assert await one_connection.fetchval("SHOW application_name") == "kept-by-the-pool"


async def test_a_transaction_left_open_is_rolled_back_on_release(one_connection: asyncpg.Pool) -> None:
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, _context: None)  # asyncpg reports the unmanaged transaction
    try:
        async with one_connection.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int) ON COMMIT DROP")
    finally:
        loop.set_exception_handler(handler)
    async with one_connection.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
