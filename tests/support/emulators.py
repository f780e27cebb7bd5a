"""Talking to the stack's Keycloak emulator as a client of it: service-account tokens."""

from __future__ import annotations

import httpx

from dev.stack import DevStack


async def client_token(stack: DevStack, client_id: str, secret: str) -> str:
    """A client-credentials access token for `client_id` from the stack's Keycloak."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{stack.keycloak_url}/realms/customers/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])
