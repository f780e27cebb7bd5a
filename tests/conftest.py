"""Shared fixtures: the real stack (Temporal dev server, PostgreSQL, emulators, worker, API) once per session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from lifecycle.config import Settings
from lifecycle.devstack import DevStack, Ports

# Settings variables from the developer's shell must not point the suite at their services.
_SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.upper() not in _SETTINGS_VARS}


@pytest_asyncio.fixture(scope="session")
async def stack() -> AsyncIterator[DevStack]:
    # Our own temporary folder: pytest prunes old basetemps, which another pytest run beside us could do.
    root = Path(tempfile.mkdtemp(prefix="customer-lifecycle-test-"))
    env = _clean_env() | {"LOG_FORMAT": "json"}
    dev = DevStack(data_dir=root / "data", ports=Ports.free(), env=env, log_dir=root / "logs")
    try:
        await dev.start()
    except BaseException:
        dev.stop()
        _print_logs(root / "logs")
        raise
    yield dev
    dev.stop()
    shutil.rmtree(root, ignore_errors=True)


def _print_logs(log_dir: Path) -> None:
    for log in sorted(log_dir.glob("*.log")):
        print(f"--- {log.name} (last 40 lines)")
        print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))


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
