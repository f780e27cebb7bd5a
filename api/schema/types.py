"""What the API answers with: the GraphQL output types, each mapped from the domain's state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.schema.documents import CustomerDocument, KycDocument, list_documents, list_kyc_documents
from api.schema.permissions import Context, OpsOnly, PortalOpsOrCustomer
from api.schema.profile import CustomerProfile, ProvidedProfile, VerifiedProfile
from db.inbox import InboxEntry
from domain.customer import (
    AccountCategory,
    CustomerStatus,
    CustomerType,
    DepositAccountStatus,
    KycDecidedBy,
    KycLevel,
    KycStatus,
    KycUpgradeStatus,
    OnboardingStage,
    workflow_id_for,
)
from domain.state import CustomerState, KycUpgrade

# The domain's enums are the GraphQL enums, under their own names: strawberry.enum marks each class in place,
# so fields are annotated with the domain classes themselves (mypy takes no call's result for a type).
strawberry.enum(CustomerType, name="CustomerType")
strawberry.enum(CustomerStatus, name="CustomerStatus")
strawberry.enum(KycStatus, name="KycStatus")
strawberry.enum(KycLevel, name="KycLevel")
strawberry.enum(KycDecidedBy, name="KycDecidedBy")
strawberry.enum(KycUpgradeStatus, name="KycUpgradeStatus")
strawberry.enum(OnboardingStage, name="OnboardingStage")
strawberry.enum(AccountCategory, name="AccountCategory")
strawberry.enum(DepositAccountStatus, name="DepositAccountStatus")


@strawberry.type(
    name="KycUpgrade",
    description="A move to a higher KYC level: Sumsub reviews the customer at that level while the customer stays "
    "ACTIVE at its own; APPROVED moves it up, DECLINED keeps it where it was (with Sumsub's reason).",
)
class KycUpgradeType:
    level: KycLevel
    level_name: str = strawberry.field(description="Sumsub's level the applicant was moved to.")
    status: KycUpgradeStatus
    requested_by: str
    started_at: datetime
    ended_at: datetime | None
    verification_url: str | None = strawberry.field(description="The WebSDK link for this level's documents.")
    moderation_comment: str | None
    reject_labels: list[str]
    next_reminder_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def from_upgrade(cls, upgrade: KycUpgrade) -> KycUpgradeType:
        return cls(
            level=upgrade.level,
            level_name=upgrade.level_name,
            status=upgrade.status,
            requested_by=upgrade.requested_by,
            started_at=upgrade.started_at,
            ended_at=upgrade.ended_at,
            verification_url=upgrade.verification_url,
            moderation_comment=upgrade.moderation_comment,
            reject_labels=upgrade.reject_labels,
            next_reminder_at=upgrade.next_reminder_at,
            expires_at=upgrade.expires_at,
        )


@strawberry.type
class Kyc:
    status: KycStatus
    level: KycLevel
    decided_by: KycDecidedBy | None = strawberry.field(
        description="Whose outcome stands: SUMSUB's review, or a MANUAL_OVERRIDE two compliance officers confirmed."
    )
    applicant_id: str | None
    verification_url: str | None
    moderation_comment: str | None
    upgrade: KycUpgradeType | None = strawberry.field(
        description="The latest KYC level upgrade (customerKycLevelUpgrade), in progress or ended; null if never."
    )


@strawberry.type
class Onboarding:
    stage: OnboardingStage
    workflow_id: str
    run_id: str | None
    last_error: str | None
    next_reminder_at: datetime | None
    expires_at: datetime | None
    started_at: datetime
    updated_at: datetime
    customer_id: strawberry.Private[str]
    # A mutation's result is the workflow's own state, which knows its step; the projection does not.
    known_step: strawberry.Private[str | None]
    step_is_known: strawberry.Private[bool]

    @strawberry.field(
        description="The side effect running or retrying now (null between steps). Only the workflow knows it "
        "(the projection is written between steps), so asking for it asks the workflow; null when it cannot answer."
    )
    async def current_step(self, info: Info[Context, Any]) -> str | None:
        if self.step_is_known:
            return self.known_step
        return await info.context.services.customers.current_step(self.customer_id)


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
    erased_at: datetime | None = strawberry.field(
        description="When compliance erased the customer's personal data (four eyes); the id and statuses remain."
    )
    provided: strawberry.Private[ProvidedProfile]

    @strawberry.field(
        description="What was provided at registration and what Sumsub verified (portal, ops, the customer themself).",
        permission_classes=[PortalOpsOrCustomer],
    )
    async def profile(self, info: Info[Context, Any]) -> CustomerProfile:
        stored = await info.context.services.customers.verified_profile(str(self.id))
        return CustomerProfile(
            provided=self.provided, verified=None if stored is None else VerifiedProfile.from_stored(stored)
        )

    @strawberry.field(description="The audit trail, newest first (ops only).", permission_classes=[OpsOnly])
    async def events(self, info: Info[Context, Any]) -> list[CustomerEvent]:
        rows = await info.context.services.customers.events(str(self.id))
        return [
            CustomerEvent(type=r.event_type, occurred_at=r.occurred_at, actor=r.actor, details=JSON(r.details))
            for r in rows
        ]

    @strawberry.field(
        description="Documents bank staff attached, newest first (ARCHIVED too with includeArchived); at most 200.",
        permission_classes=[PortalOpsOrCustomer],
    )
    async def documents(self, info: Info[Context, Any], include_archived: bool = False) -> list[CustomerDocument]:
        return await list_documents(info, str(self.id), include_archived)

    @strawberry.field(
        description="The applicant's document images at Sumsub (ops only); download each at its downloadPath.",
        permission_classes=[OpsOnly],
    )
    async def kyc_documents(self, info: Info[Context, Any]) -> list[KycDocument]:
        return await list_kyc_documents(info, str(self.id), self.kyc.applicant_id)

    @classmethod
    def from_state(cls, state: CustomerState, *, live: bool = False) -> Customer:
        """`live`: the state is the workflow's own (an update's result), not the projection's."""
        reg = state.registration
        account = state.deposit_account
        return cls(
            id=strawberry.ID(reg.customer_id),
            email=reg.email,
            customer_type=reg.customer_type,
            telegram_handle=reg.telegram_handle,
            status=state.status,
            suspension_reason=state.suspension_reason,
            erased_at=state.erased_at,
            provided=ProvidedProfile.from_registration(reg),
            created_at=state.created_at,
            kyc=Kyc(
                status=state.kyc_status,
                level=state.kyc_level,
                decided_by=state.kyc_decided_by,
                applicant_id=state.applicant_id,
                verification_url=state.verification_url,
                moderation_comment=state.moderation_comment,
                upgrade=None if state.kyc_upgrade is None else KycUpgradeType.from_upgrade(state.kyc_upgrade),
            ),
            onboarding=Onboarding(
                stage=state.stage,
                workflow_id=workflow_id_for(reg.customer_id),
                run_id=state.run_id,
                last_error=state.last_error,
                customer_id=reg.customer_id,
                known_step=state.current_step,
                step_is_known=live,
                next_reminder_at=state.next_reminder_at,
                expires_at=state.expires_at,
                started_at=state.created_at,
                updated_at=state.updated_at,
            ),
            deposit_account=None
            if account is None
            else DepositAccount(
                id=strawberry.ID(account.id),
                status=account.status,
                category=account.category,
                created_at=account.created_at,
            ),
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


@strawberry.type
class CustomerPayload:
    customer: Customer


@strawberry.type
class CustomerKycLinkCreatePayload:
    url: str = strawberry.field(description="A fresh Sumsub WebSDK link the customer opens to verify.")


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
    def from_entry(cls, entry: InboxEntry) -> StoredWebhookType:
        return cls(
            id=strawberry.ID(str(entry.id)),
            event_type=entry.event_type,
            external_user_id=entry.external_user_id,
            received_at=entry.received_at,
            outcome=entry.outcome,
            attempts=entry.attempts,
            last_error=entry.last_error,
        )
