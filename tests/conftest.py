"""Shared fixtures: the real stack (Temporal dev server, PostgreSQL, emulators, worker, API) once per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest_asyncio

from dev.stack import DevStack
from tests.helpers import running_stack


@pytest_asyncio.fixture(scope="session")
async def stack() -> AsyncIterator[DevStack]:
    async with running_stack() as dev:
        yield dev


async def client_token(stack: DevStack, client_id: str, secret: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{stack.keycloak_url}/realms/customers/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


@pytest_asyncio.fixture(scope="session")
async def portal(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The portal's server: an HTTP client to the API holding the portal service account's token."""
    token = await client_token(stack, "portal", "portal-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        yield http


@pytest_asyncio.fixture(scope="session")
async def database(stack: DevStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack.child_env["DATABASE_URL"], min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def ops(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """Operations staff: an HTTP client to the API holding the ops service account's token."""
    token = await client_token(stack, "ops", "ops-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        yield http
