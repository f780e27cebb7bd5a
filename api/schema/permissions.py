"""Who may call what: the resolver context (the caller's principal) and the role checks on fields.

    ops         everything but the compliance decisions
    compliance  four-eyes KYC overrides and erasure (one officer requests, another confirms), the export
    portal    the portal's server: register, read one customer by id (no audit trail), a KYC link;
              no listing, no lookup by email, no events
    customer  a customer's own token: `me`, its own `customer(id)`, KYC link and KYC level upgrade, never
              another's

A role check on a field refuses before any resolver runs. A customer's token passes the check of the
fields it may call for itself; the resolver then asks `own_customer` whether the id is the token's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from api.auth import ANONYMOUS, CUSTOMER_ROLE, Principal
from api.errors import Forbidden
from api.state import AppState
from domain.state import CustomerState

STAFF_ROLES = ("portal", "ops")
COMPLIANCE_ROLE = "compliance"
NOT_YOURS = "a customer may see and act on their own customer only"


@dataclass(frozen=True)
class Context:
    services: AppState
    principal: Principal


class _RolePermission(BasePermission):
    roles: tuple[str, ...] = ()
    message = "forbidden"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info[Context, Any], **kwargs: Any) -> bool:
        return info.context.principal.has_role(*self.roles)


class PortalOrOps(_RolePermission):
    roles = STAFF_ROLES


class PortalOpsOrCustomer(_RolePermission):
    """Staff for any customer, a customer's token for its own only (`own_customer` in the resolver)."""

    roles = (*STAFF_ROLES, CUSTOMER_ROLE)


class OpsOrCustomer(_RolePermission):
    """Ops for any customer, a customer's token for its own only (`own_customer` in the resolver)."""

    roles = ("ops", CUSTOMER_ROLE)


class OpsOnly(_RolePermission):
    roles = ("ops",)


class ComplianceOnly(_RolePermission):
    """Decisions about a person's data and KYC outcome: ops without the role may not take them."""

    roles = (COMPLIANCE_ROLE,)


class Authenticated(BasePermission):
    """Any verified token, a customer's own included; the resolver decides what it may see."""

    message = "forbidden"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info[Context, Any], **kwargs: Any) -> bool:
        return info.context.principal != ANONYMOUS


def is_staff(info: Info[Context, Any]) -> bool:
    """The portal's server or ops: may name any customer (what each may do is its field's role check)."""
    return info.context.principal.has_role(*STAFF_ROLES)


async def own_customer(info: Info[Context, Any], customer_id: str) -> CustomerState:
    """The customer `customer_id` if it is the calling customer's own, else FORBIDDEN.

    Own means: the token's `customer_id` claim names it (checked before anything is read, so the
    answer for another id, existing or not, is the same and as fast), and the token's subject is the
    Keycloak user the onboarding provisioned for it (so a second user carrying the same attribute, or
    a deleted and recreated one, is nobody's). No data goes with the refusal.
    """
    principal = info.context.principal
    if principal.own_customer_id is None or principal.own_customer_id != customer_id:
        raise Forbidden(NOT_YOURS)
    state = await find_own_customer(info)
    if state is None:
        raise Forbidden(NOT_YOURS)
    return state


async def find_own_customer(info: Info[Context, Any]) -> CustomerState | None:
    """The calling customer's own customer (see `own_customer`); None for any other token."""
    principal = info.context.principal
    if principal.own_customer_id is None:
        return None
    state = await info.context.services.customers.get(principal.own_customer_id)
    if state is None or state.keycloak_user_id is None or state.keycloak_user_id != principal.subject:
        return None
    return state


def actor(info: Info[Context, Any]) -> str:
    """Who the audit trail names for a change: the calling client, else the token's subject."""
    return info.context.principal.actor
