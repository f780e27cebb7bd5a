"""Provisioning against the Keycloak emulator: one user per customer however often the step runs, another
customer's user never taken, few requests per customer, and a user Keycloak will not make a customer is not
left behind.

The workflow learns the Keycloak user's id only when the provisioning step succeeds, so a step that
fails for good after creating the user must remove it itself (the workflow's compensation cannot).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from keycloak import KeycloakAdmin
from temporalio.exceptions import ApplicationError

from activities.keycloak import CUSTOMER_ROLE, KeycloakActivities, ProvisionUserInput
from dev.emulators.keycloak import DEFAULT_REALM_FILE, create_app
from domain.errors import ErrorType
from kit.settings import Settings
from tests.helpers import free_port, running_app
from tests.support.emulators import keycloak_admin_client, running_keycloak_emulator

SETTINGS = Settings()


@pytest.fixture
async def admin_of_a_realm_without_the_customer_role(starts_servers: None) -> AsyncIterator[KeycloakAdmin]:
    export = copy.deepcopy(json.loads(DEFAULT_REALM_FILE.read_text(encoding="utf-8")))
    export["roles"]["realm"] = [role for role in export["roles"]["realm"] if role["name"] != CUSTOMER_ROLE]
    async with (
        running_keycloak_emulator(export) as url,
        keycloak_admin_client(url, SETTINGS.keycloak_client_id, SETTINGS.keycloak_client_secret) as admin,
    ):
        yield admin


async def test_a_user_that_cannot_get_the_customer_role_is_removed_and_the_step_fails_for_good(
    admin_of_a_realm_without_the_customer_role: KeycloakAdmin,
) -> None:
    admin = admin_of_a_realm_without_the_customer_role
    email = f"no-role-{uuid.uuid4().hex[:8]}@example.com"
    with pytest.raises(ApplicationError) as refused:
        await KeycloakActivities(admin).provision_keycloak_user(
            ProvisionUserInput(customer_id=str(uuid.uuid4()), email=email)
        )
    assert refused.value.type == ErrorType.KEYCLOAK_REJECTED and refused.value.non_retryable
    assert await admin.a_get_users({"email": email, "exact": True}) == []


ADMIN_PATH = "/admin/realms/customers/"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Scope]]
Send = Callable[[Scope], Awaitable[None]]


class CountedAdminRequests:
    """The emulator's app, counting the admin API requests it serves by method and path (ids as `{id}`)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.seen: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(ADMIN_PATH):
            self.seen[f"{scope['method']} {_UUID.sub('{id}', path.removeprefix(ADMIN_PATH))}"] += 1
        await self.app(scope, receive, send)


@asynccontextmanager
async def counted_keycloak(
    port: int, state_dir: Path, export: dict[str, Any]
) -> AsyncIterator[tuple[str, CountedAdminRequests]]:
    app = CountedAdminRequests(
        create_app(realm_export=export, public_url=f"http://127.0.0.1:{port}", state_dir=state_dir)
    )
    async with running_app(app, port) as url:
        yield url, app


def default_export() -> dict[str, Any]:
    export: dict[str, Any] = json.loads(DEFAULT_REALM_FILE.read_text(encoding="utf-8"))
    return export


async def customer_users(admin: KeycloakAdmin, email: str) -> list[dict[str, Any]]:
    return list(await admin.a_get_users({"email": email, "exact": True}))


async def test_a_new_customer_costs_two_requests_and_every_later_attempt_reuses_its_one_user(
    starts_servers: None, tmp_path: Path
) -> None:
    """Create, then map the role (read once per process): not two searches, a create, a role read and a
    mapping. An attempt after one that created the user (a crash, a timeout) finds it by the 409."""
    port = free_port()
    async with (
        counted_keycloak(port, tmp_path, default_export()) as (url, keycloak),
        keycloak_admin_client(url, SETTINGS.keycloak_client_id, SETTINGS.keycloak_client_secret) as admin,
    ):
        provisioning = KeycloakActivities(admin)
        first, second = (
            ProvisionUserInput(customer_id=str(uuid.uuid4()), email=f"new-{uuid.uuid4().hex[:8]}@example.com")
            for _ in range(2)
        )
        created = await provisioning.provision_keycloak_user(first)
        keycloak.seen.clear()
        await provisioning.provision_keycloak_user(second)
        assert keycloak.seen == Counter({"POST users": 1, "POST users/{id}/role-mappings/realm": 1})

        # An attempt that stopped after the create, before the role was mapped: the next one maps it.
        await admin.a_delete_realm_roles_of_user(created.user_id, [await admin.a_get_realm_role(CUSTOMER_ROLE)])
        again = await provisioning.provision_keycloak_user(first)
        assert again == created
        [user] = await customer_users(admin, first.email)
        assert user["id"] == created.user_id
        roles = await admin.a_get_realm_roles_of_user(created.user_id)
        assert CUSTOMER_ROLE in {role["name"] for role in roles}


async def test_an_email_held_by_another_customers_user_is_a_conflict_and_that_user_is_left_as_it_was(
    starts_servers: None, tmp_path: Path
) -> None:
    """Held as the username (another customer's user) or as the email only (a user made by hand)."""
    port = free_port()
    async with (
        counted_keycloak(port, tmp_path, default_export()) as (url, _),
        keycloak_admin_client(url, SETTINGS.keycloak_client_id, SETTINGS.keycloak_client_secret) as admin,
    ):
        taken = f"taken-{uuid.uuid4().hex[:8]}@example.com"
        await KeycloakActivities(admin).provision_keycloak_user(
            ProvisionUserInput(customer_id=str(uuid.uuid4()), email=taken)
        )
        by_hand = f"by-hand-{uuid.uuid4().hex[:8]}@example.com"
        await admin.a_create_user({"username": "made-by-hand", "email": by_hand, "enabled": True})
        held = {email: await customer_users(admin, email) for email in (taken, by_hand)}
        for email in (taken, by_hand):
            with pytest.raises(ApplicationError) as refused:
                await KeycloakActivities(admin).provision_keycloak_user(
                    ProvisionUserInput(customer_id=str(uuid.uuid4()), email=email)
                )
            assert refused.value.type == ErrorType.KEYCLOAK_USER_CONFLICT and refused.value.non_retryable
            assert await customer_users(admin, email) == held[email]
        roles = await admin.a_get_realm_roles_of_user(held[by_hand][0]["id"])
        assert CUSTOMER_ROLE not in {role["name"] for role in roles}


async def test_a_role_deleted_and_created_again_in_keycloak_is_read_again(starts_servers: None, tmp_path: Path) -> None:
    """The role is read once per process; Keycloak restarted with the role created anew (another id) refuses
    the id read before, and the step reads the role again instead of failing the customer."""
    port = free_port()
    export = default_export()
    recreated = copy.deepcopy(export)
    for role in recreated["roles"]["realm"]:
        if role["name"] == CUSTOMER_ROLE:
            role["id"] = str(uuid.uuid4())
    url = f"http://127.0.0.1:{port}"
    async with keycloak_admin_client(url, SETTINGS.keycloak_client_id, SETTINGS.keycloak_client_secret) as admin:
        provisioning = KeycloakActivities(admin)
        async with counted_keycloak(port, tmp_path, export):
            await provisioning.provision_keycloak_user(
                ProvisionUserInput(customer_id=str(uuid.uuid4()), email=f"before-{uuid.uuid4().hex[:8]}@example.com")
            )
        async with counted_keycloak(port, tmp_path, recreated) as (_, keycloak):
            later = ProvisionUserInput(customer_id=str(uuid.uuid4()), email=f"after-{uuid.uuid4().hex[:8]}@example.com")
            user = await provisioning.provision_keycloak_user(later)
            roles = await admin.a_get_realm_roles_of_user(user.user_id)
            assert CUSTOMER_ROLE in {role["name"] for role in roles}
            assert keycloak.seen["GET roles/customer"] == 1
            assert keycloak.seen["POST users/{id}/role-mappings/realm"] == 2  # the stale id refused, then the new
