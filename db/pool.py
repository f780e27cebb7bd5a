"""The asyncpg pool and schema migrations (the SQL files in `db/migrations/`, applied in name order)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

# What a call raises while PostgreSQL is down, restarting or unreachable: the caller should answer 503
# (retry later), never 500. A query refused for its content (a constraint, bad data) is none of these.
DATABASE_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # connection refused or reset
    TimeoutError,  # connecting or acquiring from the pool took too long
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or is gone
    asyncpg.InterfaceError,  # the connection was closed under the call
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, out of memory or disk
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a write reached a standby (during a failover)
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x43_4C_4D_49  # any constant; serialises concurrent migrators (API and worker start together)


def _encode_json(value: object) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson: every projection write and read passes a whole customer document through this codec.
    await conn.set_type_codec("jsonb", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection's reset beyond asyncpg's own (which rolls back a transaction left open and drops
    the connection's listeners): none. The default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release, one more round trip per query outside a transaction: 9% of the API's CPU
    under webhook intake (py-spy, README: Benchmarks). Nothing here leaves session state on a pool connection:
    session advisory locks (migrations) and LISTEN (data key shreds, the delivery waker) use connections of
    their own, settings are `SET LOCAL` and cursors live in transactions."""


async def create_pool(dsn: str, *, size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, init=_init_connection, reset=_keep_session)
    assert pool is not None
    return pool


async def migrate(dsn: str) -> list[str]:
    """Applies the SQL files in migrations/ that have not run yet, in name order; returns their names."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        applied = []
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied.append(path.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()


async def ensure_database(server_dsn: str, name: str) -> None:
    """Creates database `name` on the server if it is missing (dev and tests only)."""
    conn = await asyncpg.connect(server_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
