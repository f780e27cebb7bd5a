"""/readyz tells scripts whether the stack can serve: 503 while Temporal (or PostgreSQL) is unreachable."""

from __future__ import annotations

import httpx

from api.app import create_app
from dev.stack import DevStack, free_port
from kit.settings import Settings
from tests.helpers import running_app


async def test_readyz_is_503_while_temporal_is_unreachable_and_healthz_stays_200(stack: DevStack) -> None:
    settings = Settings(
        database_url=stack.child_env["DATABASE_URL"],
        temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens there
        keycloak_url=stack.keycloak_url,
        dev_secrets_allowed=True,  # the stack's emulators use the dev values
    )
    async with running_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"] == "ok"
        assert ready.json()["checks"]["temporal"].startswith("unavailable")
        assert (await http.get("/healthz")).status_code == 200
