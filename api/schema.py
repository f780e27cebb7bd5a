"""The GraphQL schema: what the portal and ops can ask and do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import strawberry
from email_validator import EmailNotValidError, validate_email
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.permission import BasePermission
from strawberry.scalars import JSON
from strawberry.types import Info

from api.auth import Principal
from api.customers import CustomerView, parse_customer_id
from api.errors import ApiError, BadUserInput
from api.state import AppState
from lifecycle import domain
from lifecycle.models import CloseRequest, ReactivateRequest, RetryOnboardingRequest, SuspendRequest
from workflows.customer import CustomerWorkflow

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


class OpsOnly(_RolePermission):
    roles = ("ops",)


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
    current_step: str | None
    next_reminder_at: datetime | None
    expires_at: datetime | None
    started_at: datetime
    updated_at: datetime


@strawberry.type
class DepositAccount:
    id: strawberry.ID
    status: DepositAccountStatus
    category: AccountCategory
    created_at: datetime


@strawberry.type
class CustomerEvent:
    type: str
    occurred_at: datetime
    actor: str
    details: JSON


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
    suspension_reason: str | None

    @strawberry.field(description="The audit trail, newest first.")
    async def events(self, info: Info[Context, Any]) -> list[CustomerEvent]:
        rows = await info.context.services.customers.events(str(self.id))
        return [CustomerEvent(type=r.event_type, occurred_at=r.occurred_at, actor=r.actor, details=r.details) for r in rows]

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
            suspension_reason=state.suspension_reason,
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
                current_step=state.current_step,
                next_reminder_at=state.next_reminder_at,
                expires_at=state.expires_at,
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
class CustomerPayload:
    customer: Customer


@strawberry.input
class CustomerSuspendInput:
    customer_id: strawberry.ID
    reason: str


@strawberry.input
class CustomerReactivateInput:
    customer_id: strawberry.ID


@strawberry.input
class CustomerCloseInput:
    customer_id: strawberry.ID
    reason: str


@strawberry.input
class CustomerOnboardingRetryInput:
    customer_id: strawberry.ID


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
    async def customer_register(self, info: Info[Context, Any], input: CustomerRegisterInput) -> CustomerPayload:
        view = await info.context.services.customers.register(
            email=_valid_email(input.email),
            customer_type=domain.CustomerType(input.customer_type),
            telegram_handle=_valid_telegram_handle(input.telegram_handle),
        )
        return CustomerPayload(customer=Customer.from_view(view))

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_suspend(self, info: Info[Context, Any], input: CustomerSuspendInput) -> CustomerPayload:
        request = SuspendRequest(reason=_reason(input.reason), actor=_actor(info))
        return await _act(info, input.customer_id, CustomerWorkflow.suspend, request)

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_reactivate(self, info: Info[Context, Any], input: CustomerReactivateInput) -> CustomerPayload:
        return await _act(info, input.customer_id, CustomerWorkflow.reactivate, ReactivateRequest(actor=_actor(info)))

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_close(self, info: Info[Context, Any], input: CustomerCloseInput) -> CustomerPayload:
        request = CloseRequest(reason=_reason(input.reason), actor=_actor(info))
        return await _act(info, input.customer_id, CustomerWorkflow.close, request)

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_onboarding_retry(
        self, info: Info[Context, Any], input: CustomerOnboardingRetryInput
    ) -> CustomerPayload:
        request = RetryOnboardingRequest(actor=_actor(info))
        return await _act(info, input.customer_id, CustomerWorkflow.retry_onboarding, request)


def _actor(info: Info[Context, Any]) -> str:
    principal = info.context.principal
    return principal.client_id or principal.subject


def _reason(value: str) -> str:
    if not value.strip():
        raise BadUserInput("a reason is required", field="reason")
    return value.strip()


async def _act(info: Info[Context, Any], customer_id: strawberry.ID, update: Any, request: Any) -> CustomerPayload:
    view = await info.context.services.customers.act(parse_customer_id(customer_id), update, request)
    return CustomerPayload(customer=Customer.from_view(view))


def _is_unexpected(error: GraphQLError) -> bool:
    """Our typed errors and GraphQL's own (validation, coercion, permissions) are meant for the caller."""
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError))


schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=[lambda: MaskErrors(should_mask_error=_is_unexpected)])
