"""Typed data that crosses process boundaries: the workflow's input, state and requests.

All of it is pydantic so Temporal's pydantic converter carries it and fields can be added later
without breaking running workflows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

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
)
from domain.kyc import KycEvent


class Registration(BaseModel):
    """What the portal told us about a new customer."""

    customer_id: str
    email: str
    customer_type: CustomerType
    telegram_handle: str | None = None
    # Provided (not verified) data, sent to Sumsub when the applicant is created; a person's names or a
    # company's name. Defaults so histories and rows from before these fields still load.
    first_name: str | None = None
    last_name: str | None = None
    company_name: str | None = None


class OnboardingPolicy(BaseModel):
    """Durations the workflow waits by (and its history's length); fixed at registration from the settings,
    carried in its state."""

    reminders_after: list[timedelta] = Field(
        default_factory=lambda: [timedelta(days=1), timedelta(days=3), timedelta(days=7)]
    )
    expires_after: timedelta = timedelta(days=30)
    status_poll_interval: timedelta = timedelta(hours=6)
    activity_retry_budget: timedelta = timedelta(hours=1)
    # A run goes on as a new one past this many history events: a workflow task replays the whole history
    # when the worker has not cached the run, and a few thousand events took seconds on a busy machine.
    history_limit: int = 2000


class DepositAccount(BaseModel):
    id: str
    category: AccountCategory
    status: DepositAccountStatus
    created_at: datetime


class KycUpgrade(BaseModel):
    """A move of an active customer to a higher KYC level, reviewed by Sumsub at that level while the customer
    stays ACTIVE at its current one; the latest one is kept after it ends. Its timers work as onboarding's."""

    level: KycLevel
    level_name: str = Field(description="Sumsub's name of the level (a setting), which its events carry.")
    status: KycUpgradeStatus = KycUpgradeStatus.STARTED
    requested_by: str
    started_at: datetime
    verification_url: str | None = None
    submitted: bool = False
    reminders_sent: int = 0
    next_reminder_at: datetime | None = None
    next_poll_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    moderation_comment: str | None = None
    reject_labels: list[str] = Field(default_factory=list)

    @property
    def in_progress(self) -> bool:
        return not self.status.ended


class CustomerState(BaseModel):
    """Everything the workflow knows about its customer; carried across continue-as-new."""

    registration: Registration
    status: CustomerStatus = CustomerStatus.INACTIVE
    kyc_status: KycStatus = KycStatus.NOT_STARTED
    kyc_level: KycLevel = KycLevel.NOT_KYCED
    stage: OnboardingStage = OnboardingStage.REGISTERED
    keycloak_user_id: str | None = None
    applicant_id: str | None = None
    verification_url: str | None = None
    moderation_comment: str | None = None
    deposit_account: DepositAccount | None = None
    suspension_reason: str | None = None
    last_error: str | None = None
    current_step: str | None = Field(default=None, description="The side effect in progress (and retrying).")
    kyc_started_at: datetime | None = None
    kyc_submitted: bool = False
    reminders_sent: int = 0
    next_reminder_at: datetime | None = None
    expires_at: datetime | None = None
    next_poll_at: datetime | None = None
    last_kyc_event_at: datetime | None = None
    applied_kyc_events: list[str] = Field(default_factory=list)
    applied_overrides: list[str] = Field(
        default_factory=list,
        description="Request ids of the KYC overrides applied: a repeat answers, changing nothing.",
    )
    created_at: datetime
    updated_at: datetime
    kyc_decided_by: KycDecidedBy | None = Field(
        default=None, description="Who made the KYC outcome that stands (None until a verdict)."
    )
    kyc_upgrade: KycUpgrade | None = Field(
        default=None, description="The latest move to a higher KYC level (in progress or ended); None if never."
    )
    erased_at: datetime | None = Field(
        default=None, description="Set by erasure (never by the workflow): personal data replaced by tombstones."
    )
    run_id: str | None = Field(default=None, description="The run answering a query (set on read, not carried).")

    @property
    def customer_id(self) -> str:
        return self.registration.customer_id


class CustomerWorkflowInput(BaseModel):
    """Start input; `state` is set only when the workflow continues as new."""

    registration: Registration
    policy: OnboardingPolicy = Field(default_factory=OnboardingPolicy)
    state: CustomerState | None = None
    pending_kyc_events: list[KycEvent] = Field(default_factory=list)
    keep_search_attributes: bool = Field(
        default=True,
        description="Upsert our search attributes on every change; False only where the namespace lacks them "
        "(Temporal's time-skipping test server).",
    )


class RegisterRequest(BaseModel):
    """The portal's (possibly repeated) registration; the update answers with the current state."""

    customer_id: str
    email: str | None = Field(default=None, description="Refused if the customer now has another email.")


class SuspendRequest(BaseModel):
    reason: str
    actor: str


class ReactivateRequest(BaseModel):
    actor: str


class CloseRequest(BaseModel):
    reason: str
    actor: str


class ChangeEmailRequest(BaseModel):
    email: str
    actor: str


class KycOverrideRequest(BaseModel):
    """A confirmed four-eyes override (domain/four_eyes.py): both officers, both times, the reason."""

    approve: bool  # True: approve (profile, deposit account, ACTIVE); False: decline (suspend)
    request_id: str
    reason: str
    requested_by: str
    requested_at: datetime
    decided_by: str
    decided_at: datetime
    actor: str


class KycLevelUpgradeRequest(BaseModel):
    """Ops, or the customer themself, asks for the next KYC level."""

    actor: str


class RetryOnboardingRequest(BaseModel):
    actor: str
