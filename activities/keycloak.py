"""Activities that provision the customer's identity in Keycloak, through python-keycloak."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakError
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.errors import ErrorType
from integrations.keycloak import CUSTOMER_ID_ATTRIBUTE, CUSTOMER_ROLE

_ACCOUNT_ACTIONS = ["VERIFY_EMAIL", "UPDATE_PASSWORD"]


class ProvisionUserInput(BaseModel):
    customer_id: str
    email: str


class ProvisionedUser(BaseModel):
    """The customer's Keycloak user: created by this onboarding (now or by an earlier attempt), since a
    user owned by anyone else is refused, so compensation may remove it."""

    user_id: str


class UserRef(BaseModel):
    user_id: str


class ChangeUserEmailInput(BaseModel):
    user_id: str
    email: str


class SetUserEnabledInput(BaseModel):
    user_id: str
    enabled: bool


def _is_permanent(exc: KeycloakError) -> bool:
    """A 4xx (other than auth, a lost race's 409 or throttling) fails the same way on every retry."""
    code = exc.response_code or 0
    return 400 <= code < 500 and code not in (401, 408, 409, 429)


@contextmanager
def _permanent_errors_fail_fast() -> Iterator[None]:
    """A 4xx (other than auth, a lost race's 409 or throttling) fails the same way on every retry."""
    try:
        yield
    except KeycloakError as exc:
        code = exc.response_code or 0
        if _is_permanent(exc):
            raise ApplicationError(
                f"Keycloak refused the request ({code})", type=ErrorType.KEYCLOAK_REJECTED, non_retryable=True
            ) from exc
        raise


class KeycloakActivities:
    def __init__(self, admin: KeycloakAdmin, *, send_actions_email: bool = False) -> None:
        self._admin = admin
        self._send_actions_email = send_actions_email
        self._customer_role: dict[str, Any] | None = None  # read once; again if Keycloak no longer knows it

    async def _find_user(self, email: str) -> dict[str, Any] | None:
        for query in ({"username": email, "exact": True}, {"email": email, "exact": True}):
            users = await self._admin.a_get_users(query)
            if users:
                return users[0]
        return None

    def _owned_user_id(self, user: dict[str, Any], customer_id: str) -> str:
        owner = (user.get("attributes") or {}).get(CUSTOMER_ID_ATTRIBUTE) or []
        if customer_id not in owner:
            raise ApplicationError(
                "a Keycloak user with this email belongs to another customer",
                type=ErrorType.KEYCLOAK_USER_CONFLICT,
                non_retryable=True,
            )
        return str(user["id"])

    async def _grant_customer_role(self, user_id: str) -> None:
        """Gives the user the realm role `customer`; mapping a role the user has is a no-op in Keycloak.

        If Keycloak refuses for good (the realm lacks the role, the service account may not map it),
        the user is removed before the step fails: the workflow never learns its id, so its compensation
        could not, and a failed onboarding must leave no user behind."""
        try:
            read_before = self._customer_role
            try:
                await self._admin.a_assign_realm_roles(user_id, [read_before or await self._read_customer_role()])
            except KeycloakError as exc:
                if read_before is None or exc.response_code != 404:
                    raise
                # The role read earlier may have been deleted and created again (a new id): read it again.
                await self._admin.a_assign_realm_roles(user_id, [await self._read_customer_role()])
        except KeycloakError as exc:
            if _is_permanent(exc):
                with contextlib.suppress(KeycloakError):
                    await self._admin.a_delete_user(user_id)
            raise

    async def _read_customer_role(self) -> dict[str, Any]:
        self._customer_role = await self._admin.a_get_realm_role(CUSTOMER_ROLE)
        return self._customer_role

    @activity.defn
    async def provision_keycloak_user(self, request: ProvisionUserInput) -> ProvisionedUser:
        """Creates the customer's Keycloak user, or reuses the one that already carries its customer_id,
        and gives it the realm role `customer` (again, if an earlier attempt stopped before that).

        Creating first and looking up only on a 409 makes a new customer's provisioning two requests
        (create, map the role) instead of five: two searches, the create, the role and its mapping."""
        with _permanent_errors_fail_fast():
            payload = {
                "username": request.email,
                "email": request.email,
                "enabled": True,
                "attributes": {CUSTOMER_ID_ATTRIBUTE: [request.customer_id]},
            }
            try:
                user_id = await self._admin.a_create_user(payload)
            except KeycloakError as exc:
                if exc.response_code != 409:
                    raise
                # Created by an earlier attempt of ours (then it carries our customer_id), or someone else's.
                existing = await self._find_user(request.email)
                if existing is None:
                    raise
                user_id = self._owned_user_id(existing, request.customer_id)
                await self._grant_customer_role(user_id)
                return ProvisionedUser(user_id=user_id)
            await self._grant_customer_role(str(user_id))
            if self._send_actions_email:
                await self._admin.a_send_update_account(user_id, _ACCOUNT_ACTIONS)
            return ProvisionedUser(user_id=str(user_id))

    @activity.defn
    async def set_keycloak_user_enabled(self, request: SetUserEnabledInput) -> None:
        """Enables or disables sign-in; a partial PUT, so repeating it is harmless."""
        with _permanent_errors_fail_fast():
            try:
                await self._admin.a_update_user(request.user_id, {"enabled": request.enabled})
            except KeycloakError as exc:
                if exc.response_code == 404 and not request.enabled:
                    return  # the user is gone: nobody can sign in with it, which is what disabling wants
                raise

    @activity.defn
    async def delete_keycloak_user(self, request: UserRef) -> None:
        """Compensation: removes the user we created; already gone is fine."""
        with _permanent_errors_fail_fast():
            try:
                await self._admin.a_delete_user(request.user_id)
            except KeycloakError as exc:
                if exc.response_code != 404:
                    raise

    @activity.defn
    async def change_keycloak_user_email(self, request: ChangeUserEmailInput) -> None:
        """Username and email follow the customer's email; another user holding it is a conflict."""
        with _permanent_errors_fail_fast():
            try:
                await self._admin.a_update_user(request.user_id, {"username": request.email, "email": request.email})
            except KeycloakError as exc:
                if exc.response_code == 409:
                    raise ApplicationError(
                        "a Keycloak user with this email belongs to another customer",
                        type=ErrorType.KEYCLOAK_USER_CONFLICT,
                        non_retryable=True,
                    ) from exc
                raise
