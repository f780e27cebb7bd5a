"""Shared fixtures: the real stack (Temporal dev server, PostgreSQL, emulators, worker, API) once per session,
clients of it, and the `stack` marker for every test that starts real servers.

Helpers the tests call are in `tests/support/` (GraphQL and the WebSDK page, tokens) and `tests/helpers.py`
(ports, serving an app, a whole stack)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

from db.data_keys import DataKeyStore
from dev.stack import DevStack
from integrations.sumsub.client import SumsubClient
from kit.codec import parse_keys
from tests.helpers import running_stack
from tests.support.emulators import service_account_client

# Fixtures that start real servers: a test whose fixture closure holds one is marked `stack` at collection,
# so `pytest -m "not stack"` runs only what needs no server. A module's own server fixture requests
# `starts_servers`; a test that starts servers itself carries `pytest.mark.stack` (or its module's pytestmark).
SERVER_FIXTURES = frozenset({"stack", "starts_servers"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def starts_servers() -> None:
    """Requested by a fixture that starts an emulator or another real server, to mark its tests `stack`."""


@pytest_asyncio.fixture(scope="session")
async def stack() -> AsyncIterator[DevStack]:
    # Retries in seconds, not minutes (1+1+2+2+3+3+5 s, then dead-lettered), so delivery tests can see them.
    async with running_stack({"EVENT_DELIVERY_RETRY_SCHEDULE": "[1, 1, 2, 2, 3, 3, 5]"}) as dev:
        yield dev


@pytest_asyncio.fixture(scope="session")
async def portal(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The portal's server: an HTTP client to the API holding the portal service account's token."""
    async with service_account_client(stack, "portal", "portal-dev-secret") as http:
        await http.get("/healthz")  # fetches the first token, so `http.headers` holds it from the start
        yield http


@pytest_asyncio.fixture(scope="session")
async def database(stack: DevStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack.child_env["DATABASE_URL"], min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def data_keys(stack: DevStack, database: asyncpg.Pool) -> AsyncIterator[DataKeyStore]:
    """The customers' own payload keys, as the stack's processes hold them: a test's Temporal client needs
    them to read a customer's payloads."""
    store = DataKeyStore(
        database, stack.child_env["DATABASE_URL"], parse_keys(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"])
    )
    await store.start()
    yield store
    await store.aclose()


@pytest_asyncio.fixture(scope="session")
async def ops(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """Operations staff: an HTTP client to the API holding the ops service account's token."""
    async with service_account_client(stack, "ops", "ops-dev-secret") as http:
        await http.get("/healthz")  # fetches the first token, so `http.headers` holds it from the start
        yield http


@pytest.fixture
async def keycloak_admin(stack: DevStack) -> AsyncIterator[Any]:
    """The stack's Keycloak as the service's own admin client sees it (python-keycloak)."""
    connection = KeycloakOpenIDConnection(
        server_url=stack.keycloak_url + "/",
        realm_name="customers",
        client_id="customer-lifecycle",
        client_secret_key="customer-lifecycle-dev-secret",
    )
    yield KeycloakAdmin(connection=connection)
    await connection.keycloak_openid.connection.aclose()
    await connection.aclose()


@pytest.fixture
async def sumsub(stack: DevStack) -> AsyncIterator[SumsubClient]:
    """The stack's Sumsub emulator through the service's own client."""
    async with SumsubClient(
        base_url=stack.sumsub_url, app_token="sbx:dev-app-token", secret_key="dev-sumsub-secret-key"
    ) as client:
        yield client
