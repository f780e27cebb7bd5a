"""The GraphQL schema: what the portal and ops can ask and do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from email_validator import EmailNotValidError, validate_email
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.permission import BasePermission
from strawberry.scalars import JSON
from strawberry.types import Info

import db.customers
import db.inbox
from api.auth import ANONYMOUS, Principal
from api.errors import ApiError, BadUserInput, Conflict, Forbidden, NotFound
from api.relay import StoredWebhook
from api.service import decode_cursor, encode_cursor, parse_customer_id
from api.state import AppState
from domain import customer as domain
from domain.customer import workflow_id_for
from domain.state import (
    ChangeEmailRequest,
    CloseRequest,
    CustomerState,
    ReactivateRequest,
    RetryOnboardingRequest,
    SuspendRequest,
)
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


class Authenticated(BasePermission):
    """Any verified token, a customer's own included; the resolver decides what it may see."""

    message = "forbidden"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info[Context, Any], **kwargs: Any) -> bool:
        return info.context.principal != ANONYMOUS


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
    run_id: str | None
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

    @strawberry.field(description="The audit trail, newest first (portal and ops only).", permission_classes=[PortalOrOps])
    async def events(self, info: Info[Context, Any]) -> list[CustomerEvent]:
        rows = await info.context.services.customers.events(str(self.id))
        return [CustomerEvent(type=r.event_type, occurred_at=r.occurred_at, actor=r.actor, details=r.details) for r in rows]

    @classmethod
    def from_state(cls, state: CustomerState) -> Customer:
        reg = state.registration
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
                workflow_id=workflow_id_for(reg.customer_id),
                run_id=state.run_id,
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


@strawberry.enum
class CustomerSortField(Enum):
    CREATED_AT = "CREATED_AT"


@strawberry.enum
class SortDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.input
class CustomerSort:
    field: CustomerSortField = CustomerSortField.CREATED_AT
    direction: SortDirection = SortDirection.DESC


@strawberry.input(description="Every field set narrows the list; the creation range is [createdAfter, createdBefore).")
class CustomerFilter:
    status: CustomerStatus | None = None
    customer_type: CustomerType | None = None
    kyc_status: KycStatus | None = None
    stage: OnboardingStage | None = None
    created_after: datetime | None = strawberry.field(default=None, description="Created at or after this instant.")
    created_before: datetime | None = strawberry.field(default=None, description="Created before this instant.")

    def to_db(self) -> db.customers.CustomerFilter:
        return db.customers.CustomerFilter(
            status=self.status,
            customer_type=self.customer_type,
            kyc_status=self.kyc_status,
            stage=self.stage,
            created_after=_aware(self.created_after),
            created_before=_aware(self.created_before),
        )


@strawberry.type
class CustomerEdge:
    cursor: str
    node: Customer


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class CustomerConnection:
    edges: list[CustomerEdge]
    page_info: PageInfo


@strawberry.input
class CustomerKycLinkCreateInput:
    customer_id: strawberry.ID


@strawberry.type
class CustomerKycLinkCreatePayload:
    url: str = strawberry.field(description="A fresh Sumsub WebSDK link the customer opens to verify.")


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


def _aware(value: datetime | None) -> datetime | None:
    """An instant without an offset is read as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


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
        state = await info.context.services.customers.get(parse_customer_id(id))
        return None if state is None else Customer.from_state(state)

    @strawberry.field(
        permission_classes=[PortalOrOps],
        description="Customers from the PostgreSQL projection, newest first unless sorted otherwise; "
        "`first` is 1-100, `after` an `endCursor` from the previous page.",
    )
    async def customers(
        self,
        info: Info[Context, Any],
        first: int = 20,
        after: str | None = None,
        filter: CustomerFilter | None = None,
        sort: CustomerSort | None = None,
    ) -> CustomerConnection:
        descending = (sort or CustomerSort()).direction is SortDirection.DESC
        page = await info.context.services.customers.page(
            (filter or CustomerFilter()).to_db(),
            first=first,
            after=None if after is None else decode_cursor(after),
            descending=descending,
        )
        edges = [
            CustomerEdge(cursor=encode_cursor(db.customers.CustomerKey(state.created_at, state.customer_id)), node=Customer.from_state(state))
            for state in page.customers
        ]
        end_cursor = edges[-1].cursor if edges else None
        return CustomerConnection(edges=edges, page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=end_cursor))

    @strawberry.field(permission_classes=[PortalOrOps], description="The customer with this email, in any letter case.")
    async def customer_by_email(self, info: Info[Context, Any], email: str) -> Customer | None:
        state = await info.context.services.customers.get_by_email(_valid_email(email))
        return None if state is None else Customer.from_state(state)

    @strawberry.field(
        permission_classes=[Authenticated],
        description="The customer the caller's token belongs to (its customer_id claim, else its Keycloak user); "
        "null for any other token.",
    )
    async def me(self, info: Info[Context, Any]) -> Customer | None:
        principal = info.context.principal
        state = await info.context.services.customers.find_own(customer_id=principal.customer_id, subject=principal.subject)
        return None if state is None else Customer.from_state(state)

    @strawberry.field(
        permission_classes=[OpsOnly],
        description="Stored Sumsub webhooks no workflow took, that were refused, or whose delivery keeps failing.",
    )
    async def undeliverable_webhooks(self, info: Info[Context, Any], first: int = 50) -> list[StoredWebhookType]:
        if not 1 <= first <= 500:
            raise BadUserInput("first must be between 1 and 500", field="first")
        rows = await db.inbox.undeliverable_webhooks(info.context.services.pool, limit=first)
        return [StoredWebhookType.from_row(row) for row in rows]


@strawberry.input
class CustomerEmailUpdateInput:
    customer_id: strawberry.ID
    email: str


@strawberry.input
class WebhookReplayInput:
    id: strawberry.ID


@strawberry.type(name="StoredWebhook", description="A Sumsub webhook as the inbox keeps it (no personal data).")
class StoredWebhookType:
    id: strawberry.ID
    event_type: str
    external_user_id: str | None
    received_at: datetime
    outcome: str | None
    attempts: int
    last_error: str | None

    @classmethod
    def from_row(cls, row: Any) -> StoredWebhookType:
        return cls(
            id=strawberry.ID(str(row["id"])),
            event_type=row["event_type"],
            external_user_id=row["external_user_id"],
            received_at=row["received_at"],
            outcome=row["outcome"],
            attempts=row["attempts"],
            last_error=row["last_error"],
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        permission_classes=[Authenticated],
        description="A fresh Sumsub verification link; for the portal, ops, or the customer themself.",
    )
    async def customer_kyc_link_create(
        self, info: Info[Context, Any], input: CustomerKycLinkCreateInput
    ) -> CustomerKycLinkCreatePayload:
        principal, customers = info.context.principal, info.context.services.customers
        customer_id = parse_customer_id(input.customer_id, field="customerId")
        if not principal.has_role("portal", "ops") and not await customers.is_own(
            customer_id, claimed_customer_id=principal.customer_id, subject=principal.subject
        ):
            raise Forbidden("a customer may create a verification link only for themself")
        return CustomerKycLinkCreatePayload(url=await customers.create_kyc_link(customer_id))

    @strawberry.mutation(permission_classes=[PortalOrOps])
    async def customer_register(self, info: Info[Context, Any], input: CustomerRegisterInput) -> CustomerPayload:
        state = await info.context.services.customers.register(
            email=_valid_email(input.email),
            customer_type=domain.CustomerType(input.customer_type),
            telegram_handle=_valid_telegram_handle(input.telegram_handle),
        )
        return CustomerPayload(customer=Customer.from_state(state))

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

    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="Changes the customer's email everywhere (PostgreSQL, Keycloak, Sumsub) or nowhere.",
    )
    async def customer_email_update(self, info: Info[Context, Any], input: CustomerEmailUpdateInput) -> CustomerPayload:
        request = ChangeEmailRequest(email=_valid_email(input.email), actor=_actor(info))
        return await _act(info, input.customer_id, CustomerWorkflow.change_email, request)

    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="Delivers a stored Sumsub webhook to its customer's workflow again.",
    )
    async def webhook_replay(self, info: Info[Context, Any], input: WebhookReplayInput) -> StoredWebhookType:
        services = info.context.services
        try:
            inbox_id = int(input.id)
        except ValueError:
            raise BadUserInput("webhook id must be a number", field="id") from None
        row = await db.inbox.get_webhook(services.pool, inbox_id)
        if row is None:
            raise NotFound("no stored webhook with this id")
        if row["outcome"] and row["outcome"].startswith("rejected"):
            raise Conflict("a webhook refused as invalid cannot be delivered")
        await services.relay.deliver(StoredWebhook(row["id"], row["payload"], row["dedupe_key"], row["received_at"]))
        updated = await db.inbox.get_webhook(services.pool, inbox_id)
        assert updated is not None
        return StoredWebhookType.from_row(updated)


def _actor(info: Info[Context, Any]) -> str:
    principal = info.context.principal
    return principal.client_id or principal.subject


def _reason(value: str) -> str:
    if not value.strip():
        raise BadUserInput("a reason is required", field="reason")
    return value.strip()


async def _act(info: Info[Context, Any], customer_id: strawberry.ID, update: Any, request: Any) -> CustomerPayload:
    state = await info.context.services.customers.act(parse_customer_id(customer_id), update, request)
    return CustomerPayload(customer=Customer.from_state(state))


def _is_unexpected(error: GraphQLError) -> bool:
    """Our typed errors and GraphQL's own (validation, coercion, permissions) are meant for the caller."""
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError))


# Clients send the same few documents over and over: parse and validate each once (validation was
# over a third of the API's CPU per `customer(id)` read before these caches).
schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    extensions=[
        lambda: MaskErrors(should_mask_error=_is_unexpected),
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
    ],
)
