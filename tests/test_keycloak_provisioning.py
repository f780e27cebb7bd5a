"""Provisioning against the Keycloak emulator: a user Keycloak will not make a customer is not left behind.

The workflow learns the Keycloak user's id only when the provisioning step succeeds, so a step that
fails for good after creating the user must remove it itself (the workflow's compensation cannot).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from keycloak import KeycloakAdmin
from temporalio.exceptions import ApplicationError

from activities.keycloak import CUSTOMER_ROLE, KeycloakActivities, ProvisionUserInput
from dev.emulators.keycloak import DEFAULT_REALM_FILE
from domain.errors import ErrorType
from kit.settings import Settings
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
