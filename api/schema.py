"""The GraphQL schema: what the portal and ops can ask and do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import strawberry
from email_validator import EmailNotValidError, validate_email
from strawberry.extensions import MaskErrors
from strawberry.permission import BasePermission
from strawberry.types import Info

from api.auth import Principal
from api.customers import CustomerView, parse_customer_id
from api.errors import ApiError, BadUserInput
from api.state import AppState
from lifecycle import domain

CustomerType = strawberry.enum(domain.CustomerType, name="CustomerType")
CustomerStatus = strawberry.enum(domain.CustomerStatus, name="CustomerStatus")
KycStatus = strawberry.enum(domain.KycStatus, name="KycStatus")
KycLevel = strawberry.enum(domain.KycLevel, name="KycLevel")
OnboardingStage = strawberry.enum(domain.OnboardingStage, name="OnboardingStage")
AccountCategory = strawberry.enum(domain.AccountCategory, name="AccountCategory")
DepositAccountStatus = strawberry.enum(domain.DepositAccountStatus, name="DepositAccountStatus")

_TELEGRAM_HANDLE = re.compile(r"^@?([A-Za-z][A-Za-z0-9_]{4,31})$")


@dataclass(frozen=True)
class Context:
    services: AppState
    principal: Principal


# --- permissions ------------------------------------------------------------------------------------


class _RolePermission(BasePermission):
    roles: tuple[str, ...] = ()
    message = "forbidden"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info[Context, Any], **kwargs: Any) -> bool:
        return info.context.principal.has_role(*self.roles)


class PortalOrOps(_RolePermission):
    roles = ("portal", "ops")


# --- types ------------------------------------------------------------------------------------------


@strawberry.type
class Kyc:
    status: KycStatus
    level: KycLevel
    applicant_id: str | None
    verification_url: str | None
    moderation_comment: str | None


@strawberry.type
class Onboarding:
    stage: OnboardingStage
    workflow_id: str
    last_error: str | None
    started_at: datetime
    updated_at: datetime


@strawberry.type
class DepositAccount:
    id: strawberry.ID
    status: DepositAccountStatus
    category: AccountCategory
    created_at: datetime


@strawberry.type
class Customer:
    id: strawberry.ID
    email: str
    customer_type: CustomerType
    telegram_handle: str | None
    status: CustomerStatus
    created_at: datetime
    kyc: Kyc
    onboarding: Onboarding
    deposit_account: DepositAccount | None

    @classmethod
    def from_view(cls, view: CustomerView) -> Customer:
        state, reg = view.state, view.state.registration
        account = state.deposit_account
        return cls(
            id=strawberry.ID(reg.customer_id),
            email=reg.email,
            customer_type=reg.customer_type,
            telegram_handle=reg.telegram_handle,
            status=state.status,
            created_at=state.created_at,
            kyc=Kyc(
                status=state.kyc_status,
                level=state.kyc_level,
                applicant_id=state.applicant_id,
                verification_url=state.verification_url,
                moderation_comment=state.moderation_comment,
            ),
            onboarding=Onboarding(
                stage=state.stage,
                workflow_id=view.workflow_id,
                last_error=state.last_error,
                started_at=state.created_at,
                updated_at=state.updated_at,
            ),
            deposit_account=None
            if account is None
            else DepositAccount(
                id=strawberry.ID(account.id), status=account.status, category=account.category, created_at=account.created_at
            ),
        )


@strawberry.input
class CustomerRegisterInput:
    email: str
    customer_type: CustomerType
    telegram_handle: str | None = None


@strawberry.type
class CustomerRegisterPayload:
    customer: Customer


def _valid_email(value: str) -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise BadUserInput(f"invalid email: {exc}", field="email") from None


def _valid_telegram_handle(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    match = _TELEGRAM_HANDLE.match(value.strip())
    if match is None:
        raise BadUserInput("telegram handle must be 5-32 letters, digits or underscores", field="telegramHandle")
    return match.group(1).lower()


# --- operations -------------------------------------------------------------------------------------


@strawberry.type
class Query:
    @strawberry.field(permission_classes=[PortalOrOps])
    async def customer(self, info: Info[Context, Any], id: strawberry.ID) -> Customer | None:
        view = await info.context.services.customers.get(parse_customer_id(id))
        return None if view is None else Customer.from_view(view)


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=[PortalOrOps])
    async def customer_register(self, info: Info[Context, Any], input: CustomerRegisterInput) -> CustomerRegisterPayload:
        view = await info.context.services.customers.register(
            email=_valid_email(input.email),
            customer_type=domain.CustomerType(input.customer_type),
            telegram_handle=_valid_telegram_handle(input.telegram_handle),
        )
        return CustomerRegisterPayload(customer=Customer.from_view(view))


def _is_unexpected(error: Any) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, ApiError)


schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=[MaskErrors(should_mask_error=_is_unexpected)])
