"""The KYC vocabulary: what a Sumsub event means for the lifecycle, and what each kind of event sets.

Nothing past `integrations/sumsub/webhooks.py` sees Sumsub's JSON; the workflow and the rules see these.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from domain.customer import KycStatus, OnboardingStage


class KycEventKind(StrEnum):
    """What a Sumsub webhook means for the lifecycle; nothing past the mapping sees Sumsub's JSON."""

    CREATED = "CREATED"
    SUBMITTED = "SUBMITTED"
    ON_HOLD = "ON_HOLD"
    APPROVED = "APPROVED"
    RESUBMISSION_REQUESTED = "RESUBMISSION_REQUESTED"
    DECLINED = "DECLINED"
    RESET = "RESET"
    PERSONAL_INFO_CHANGED = "PERSONAL_INFO_CHANGED"  # Sumsub's data on the applicant changed: read it again
    IGNORED = "IGNORED"


class KycEvent(BaseModel):
    """One Sumsub verification event, already authenticated and mapped."""

    kind: KycEventKind
    sumsub_type: str
    applicant_id: str | None
    occurred_at: datetime
    dedupe_key: str
    moderation_comment: str | None = None
    reject_labels: list[str] = Field(default_factory=list)
    level_name: str | None = Field(
        default=None, description="Sumsub's level the applicant is at (None in events recorded before levels mattered)."
    )
    previous_level_name: str | None = Field(default=None, description="On a level change: the level it left.")
    stamped_at: datetime | None = Field(
        default=None,
        description="Sumsub's own time for an event stamped too far after we received it; `occurred_at` is then "
        "the receipt time, so no single future-dated event can make every later one look stale.",
    )


# What each kind of event does to the KYC status and the onboarding stage (None: no change).
KYC_EVENT_EFFECTS: dict[KycEventKind, tuple[KycStatus, OnboardingStage] | None] = {
    KycEventKind.CREATED: None,
    KycEventKind.SUBMITTED: (KycStatus.PENDING, OnboardingStage.KYC_IN_REVIEW),
    KycEventKind.ON_HOLD: (KycStatus.ON_HOLD, OnboardingStage.KYC_ON_HOLD),
    KycEventKind.RESUBMISSION_REQUESTED: (
        KycStatus.RESUBMISSION_REQUESTED,
        OnboardingStage.KYC_RESUBMISSION_REQUESTED,
    ),
    KycEventKind.APPROVED: (KycStatus.APPROVED, OnboardingStage.KYC_APPROVED),
    KycEventKind.DECLINED: (KycStatus.DECLINED, OnboardingStage.KYC_DECLINED),
    KycEventKind.RESET: (KycStatus.STARTED, OnboardingStage.AWAITING_KYC),
    KycEventKind.PERSONAL_INFO_CHANGED: None,  # changes the verified profile, not the KYC status
    KycEventKind.IGNORED: None,
}
