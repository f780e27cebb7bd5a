"""The ceiling `make bench` measures our API against: a bare Starlette + asyncpg app on the same uvicorn
(uvloop, httptools), the same PostgreSQL and the same load generator, doing only the essential work.

    POST /webhook        the same digest check over the raw body, a JSON parse, one INSERT (its own table)
    GET  /customer/{id}  the same row read as `customer(id)` (the projection's document), as JSON

    python -m scripts.bench_ceiling   # DATABASE_URL, BENCH_CEILING_PORT, SUMSUB_WEBHOOK_SECRET from the environment
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integrations.sumsub.webhooks import verify_webhook_digest

TABLE = """
CREATE TABLE IF NOT EXISTS bench_ceiling_inbox (
    id bigserial PRIMARY KEY, dedupe_key text NOT NULL UNIQUE, payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)"""


def create_ceiling(dsn: str, secret: str) -> Starlette:
    pool: asyncpg.Pool | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        assert pool is not None
        await pool.execute(TABLE)
        yield
        await pool.close()

    async def webhook(request: Request) -> Response:
        body = await request.body()
        if not verify_webhook_digest(
            body,
            digest=request.headers.get("x-payload-digest"),
            alg=request.headers.get("x-payload-digest-alg"),
            secret=secret,
        ):
            return Response(b'{"error":"digest"}', status_code=401)
        payload = orjson.loads(body)
        assert pool is not None
        await pool.execute(
            "INSERT INTO bench_ceiling_inbox (dedupe_key, payload) VALUES ($1, $2::text::jsonb) "
            "ON CONFLICT (dedupe_key) DO NOTHING",
            str(payload["correlationId"]),
            body.decode(),
        )
        return Response(b'{"ok":true}', media_type="application/json")

    async def customer(request: Request) -> Response:
        assert pool is not None
        state = await pool.fetchval("SELECT state::text FROM customers WHERE id = $1::uuid", request.path_params["id"])
        if state is None:
            return Response(b'{"customer":null}', status_code=404, media_type="application/json")
        return Response(b'{"customer":' + state.encode() + b"}", media_type="application/json")

    return Starlette(
        routes=[Route("/webhook", webhook, methods=["POST"]), Route("/customer/{id}", customer)], lifespan=lifespan
    )


def main() -> None:
    app = create_ceiling(os.environ["DATABASE_URL"], os.environ["SUMSUB_WEBHOOK_SECRET"])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["BENCH_CEILING_PORT"]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
