"""Who may call what: the resolver context (the caller's principal) and the role checks on fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from api.auth import ANONYMOUS, Principal
from api.state import AppState


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
    roles = ("portal", "ops")


class OpsOnly(_RolePermission):
    roles = ("ops",)


class Authenticated(BasePermission):
    """Any verified token, a customer's own included; the resolver decides what it may see."""

    message = "forbidden"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info[Context, Any], **kwargs: Any) -> bool:
        return info.context.principal != ANONYMOUS


def actor(info: Info[Context, Any]) -> str:
    """Who the audit trail names for a change: the calling client, else the token's subject."""
    principal = info.context.principal
    return principal.client_id or principal.subject
