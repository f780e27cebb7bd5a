"""The KYC decision rules: whether a Sumsub event applies, what it changes, and when the workflow wakes.

Pure functions of the customer's state, an event and the clock. The workflow executes what they
return (the stage move, the activities of an effect, the audit row), so each rule is unit-tested
without Temporal (`tests/test_kyc_rules.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from domain.customer import CustomerStatus, KycDecidedBy, KycLevel, KycStatus, KycUpgradeStatus, OnboardingStage
from domain.kyc import KYC_EVENT_EFFECTS, KycEvent, KycEventKind
from domain.state import CustomerState, KycUpgrade, OnboardingPolicy
from domain.transitions import WAITING_FOR_KYC_STAGES, IllegalTransition, next_stage

# The suspension a RED review of an active customer causes; only a later GREEN lifts it by itself.
KYC_REVIEW_SUSPENSION = "kyc_review_declined"
# Why a Sumsub verdict after a manual override changed nothing (its audit row says so; ops decide).
AFTER_OVERRIDE = "a manual KYC override decided this customer: recorded for ops, not applied"
# Remember this many applied Sumsub deliveries to drop duplicates; older ones are also older by createdAtMs.
REMEMBERED_EVENTS = 200
# Kinds that show the customer has submitted documents (no more reminders).
_SUBMITTED_KINDS = frozenset(
    {
        KycEventKind.SUBMITTED,
        KycEventKind.ON_HOLD,
        KycEventKind.APPROVED,
        KycEventKind.RESUBMISSION_REQUESTED,
        KycEventKind.DECLINED,
    }
)
_RED_KINDS = frozenset({KycEventKind.DECLINED, KycEventKind.RESUBMISSION_REQUESTED})
# The level an upgrade moves a customer to, from the level it is at.
NEXT_LEVEL: dict[KycLevel, KycLevel] = {KycLevel.BASIC: KycLevel.ADVANCED}


class KycEffect(StrEnum):
    """A side effect an event calls for, beyond the state change itself."""

    END_ONBOARDING = "END_ONBOARDING"  # KYC will not complete: timers off, sign-in disabled
    SUSPEND = "SUSPEND"  # a RED review of an active customer
    REACTIVATE = "REACTIVATE"  # a GREEN lifting the suspension a RED review caused
    REFRESH_PROFILE = "REFRESH_PROFILE"  # read what Sumsub verified again (it changed at Sumsub)


@dataclass(frozen=True)
class KycDecision:
    """What one event does: nothing (`ignored` says why), or the new values and at most one effect.

    `kyc_status` None means the event is applied but changes no field (an `applicantCreated`)."""

    ignored: str | None = None
    kyc_status: KycStatus | None = None
    stage: OnboardingStage | None = None
    moderation_comment: str | None = None
    submitted: bool = False
    effect: KycEffect | None = None
    occurred_at: datetime | None = None
    # An event of the level upgrade in progress: it moves the upgrade (`upgrade_status`), never onboarding.
    upgrade: bool = False
    upgrade_status: KycUpgradeStatus | None = None
    reject_labels: tuple[str, ...] = ()

    def audit(self, event: KycEvent) -> tuple[str, dict[str, Any]]:
        """The audit row's type and details for this event; an upgrade's RED review says why."""
        details: dict[str, Any] = {"sumsub_type": event.sumsub_type, "kind": event.kind.value}
        if event.stamped_at is not None:
            details["ordered_by_receipt"] = f"Sumsub stamped it {event.stamped_at.isoformat()}, after it was received"
        if self.ignored is not None:
            return "kyc.event_ignored", details | {"ignored": self.ignored}
        if not self.upgrade:
            return f"kyc.{event.kind.value.lower()}", details
        details["level_name"] = event.level_name
        if event.previous_level_name is not None:
            details["previous_level_name"] = event.previous_level_name
        if event.kind in _RED_KINDS:
            details |= {"moderation_comment": event.moderation_comment, "reject_labels": event.reject_labels}
        return f"kyc.upgrade_{event.kind.value.lower()}", details


def oldest_first(events: Iterable[KycEvent]) -> list[KycEvent]:
    """Sumsub events arrive in any order; they are applied by the time Sumsub stamped them."""
    return sorted(events, key=lambda event: event.occurred_at)


def reason_to_ignore(state: CustomerState, event: KycEvent) -> str | None:
    """Why an event must change nothing: a duplicate, another applicant's, or older than one applied.

    A personal-info change is never stale: it only says "read the applicant again", and a read is current."""
    if event.dedupe_key in state.applied_kyc_events:
        return "duplicate"
    if event.applicant_id and state.applicant_id and event.applicant_id != state.applicant_id:
        return "applicant id differs from the one on file"
    if event.kind is KycEventKind.PERSONAL_INFO_CHANGED:
        return None
    last = state.last_kyc_event_at
    if last is not None and event.occurred_at < last:
        return "older than the newest event applied"
    return None


def decide(state: CustomerState, event: KycEvent) -> KycDecision:
    """What `event` does to this customer now: while onboarding waits for a verdict, or after it."""
    reason = reason_to_ignore(state, event)
    if reason is not None:
        return KycDecision(ignored=reason)
    if event.kind is KycEventKind.PERSONAL_INFO_CHANGED:
        return _personal_info_changed(state)
    upgrade = state.kyc_upgrade
    if (
        upgrade is not None
        and event.level_name == upgrade.level_name
        and upgrade.status is not KycUpgradeStatus.APPROVED
    ):
        # A review at the level the customer is moving (or was moving) to: it decides only the upgrade, even after
        # an override, and never suspends; after the upgrade ended only a late GREEN still counts.
        return _during_upgrade(state, event) if upgrade.in_progress else _after_upgrade(state, upgrade, event)
    if state.kyc_decided_by is KycDecidedBy.MANUAL_OVERRIDE and KYC_EVENT_EFFECTS[event.kind] is not None:
        # Compliance decided under four eyes: Sumsub's later word is recorded for ops, never applied by itself.
        return KycDecision(ignored=AFTER_OVERRIDE)
    if state.stage in WAITING_FOR_KYC_STAGES:
        return _while_waiting(state, event)
    return _after_onboarding(state, event)


def _personal_info_changed(state: CustomerState) -> KycDecision:
    """Sumsub's data on an onboarded customer's applicant changed: read it again. Before activation there
    is nothing to refresh: the profile is first read when a GREEN review activates the customer (so the
    verified profile never holds data no review has approved). No status moves and the event time is not
    kept, so it never makes a later review look stale."""
    if state.stage in WAITING_FOR_KYC_STAGES or state.stage is OnboardingStage.KYC_APPROVED:
        return KycDecision(ignored="not verified yet: the profile is read when KYC approves")
    if state.stage is not OnboardingStage.ONBOARDED or state.applicant_id is None:
        return KycDecision(ignored=f"onboarding already ended ({state.stage.value})")
    if state.kyc_upgrade is not None and state.kyc_upgrade.in_progress:
        # Data from the upgrade's documents is not verified until its review approves (which reads it then).
        return KycDecision(ignored="a KYC upgrade's review is under way: the profile is read when it approves")
    return KycDecision(effect=KycEffect.REFRESH_PROFILE)


def _while_waiting(state: CustomerState, event: KycEvent) -> KycDecision:
    effect = KYC_EVENT_EFFECTS[event.kind]
    if effect is None:
        return KycDecision() if event.kind is KycEventKind.CREATED else KycDecision(ignored="no lifecycle meaning")
    kyc_status, stage = effect
    try:
        next_stage(state.stage, stage)
    except IllegalTransition as exc:
        return KycDecision(ignored=str(exc))
    comment = state.moderation_comment if event.moderation_comment is None else event.moderation_comment
    return KycDecision(
        kyc_status=kyc_status,
        stage=stage,
        moderation_comment=comment,
        submitted=event.kind in _SUBMITTED_KINDS,
        effect=KycEffect.END_ONBOARDING if stage is OnboardingStage.KYC_DECLINED else None,
        occurred_at=event.occurred_at,
    )


def _after_onboarding(state: CustomerState, event: KycEvent) -> KycDecision:
    """A RED review of an active customer suspends it; a later GREEN lifts only that suspension."""
    if state.stage is not OnboardingStage.ONBOARDED:
        return KycDecision(ignored=f"onboarding already ended ({state.stage.value})")
    if event.kind in _RED_KINDS:
        effect = KYC_EVENT_EFFECTS[event.kind]
        assert effect is not None
        return KycDecision(
            kyc_status=effect[0],  # ops cannot reactivate until a GREEN review
            moderation_comment=event.moderation_comment or state.moderation_comment,
            effect=KycEffect.SUSPEND if state.status is CustomerStatus.ACTIVE else None,
            occurred_at=event.occurred_at,
        )
    if event.kind is KycEventKind.APPROVED and state.kyc_status is not KycStatus.APPROVED:
        lifts = state.status is CustomerStatus.SUSPENDED and state.suspension_reason == KYC_REVIEW_SUSPENSION
        return KycDecision(
            kyc_status=KycStatus.APPROVED,
            moderation_comment=state.moderation_comment,
            effect=KycEffect.REACTIVATE if lifts else None,
            occurred_at=event.occurred_at,
        )
    return KycDecision(ignored="no effect on an onboarded customer in this state")


def _during_upgrade(state: CustomerState, event: KycEvent) -> KycDecision:
    """The upgrade's review moves only the upgrade: the customer stays ACTIVE at its level whatever it says
    (a RED is recorded with why, not a suspension); a GREEN moves the customer to the new level."""
    effect = KYC_EVENT_EFFECTS[event.kind]
    if effect is None:
        ignored = None if event.kind is KycEventKind.CREATED else "no lifecycle meaning"
        return KycDecision(ignored=ignored, upgrade=True)
    if event.kind is KycEventKind.APPROVED and state.kyc_status is not KycStatus.APPROVED:
        return KycDecision(ignored=f"KYC is {state.kyc_status.value}: the level is not raised", upgrade=True)
    approved = event.kind is KycEventKind.APPROVED
    return KycDecision(
        upgrade=True,
        effect=KycEffect.REFRESH_PROFILE if approved else None,  # what the new level verified
        upgrade_status=KycUpgradeStatus(effect[0].value),  # a reset or level change: STARTED again
        moderation_comment=event.moderation_comment,
        reject_labels=tuple(event.reject_labels) if event.kind in _RED_KINDS else (),
        submitted=event.kind in _SUBMITTED_KINDS,
        occurred_at=event.occurred_at,
    )


def _after_upgrade(state: CustomerState, upgrade: KycUpgrade, event: KycEvent) -> KycDecision:
    """A review at the level of an upgrade that ended without approval (expired, declined, cancelled): Sumsub
    finishing late. A GREEN still moves an ACTIVE, approved customer up; anything else is only recorded."""
    if event.kind is KycEventKind.APPROVED and state.status is CustomerStatus.ACTIVE:
        return _during_upgrade(state, event)
    ended = upgrade.status.value
    return KycDecision(ignored=f"a review at the level of an upgrade that ended ({ended}): recorded only", upgrade=True)


def upgrade_refusal(state: CustomerState) -> str | None:
    """Why the customer cannot start a KYC level upgrade now, or None: only an active, approved customer with a
    higher level to go to, and one upgrade at a time."""
    if state.stage is not OnboardingStage.ONBOARDED:
        return f"a KYC level upgrade needs an onboarded customer (stage is {state.stage.value})"
    if state.status is not CustomerStatus.ACTIVE:
        return f"a KYC level upgrade needs an ACTIVE customer (status is {state.status.value})"
    if state.kyc_status is not KycStatus.APPROVED:
        return f"a KYC level upgrade needs an approved KYC (it is {state.kyc_status.value})"
    if state.kyc_level not in NEXT_LEVEL:
        return f"the customer is at the highest KYC level ({state.kyc_level.value})"
    if state.kyc_upgrade is not None and state.kyc_upgrade.in_progress:
        upgrade = state.kyc_upgrade
        return f"an upgrade to {upgrade.level.value} is already in progress (since {upgrade.started_at.isoformat()})"
    return None


def start_upgrade(
    state: CustomerState, *, level_name: str, requested_by: str, now: datetime, policy: OnboardingPolicy
) -> KycUpgrade:
    """A new upgrade to the next level, with onboarding's timers: reminders, the status poll and expiry."""
    return KycUpgrade(
        level=NEXT_LEVEL[state.kyc_level],
        level_name=level_name,
        requested_by=requested_by,
        started_at=now,
        next_reminder_at=reminder_at(now, submitted=False, sent=0, policy=policy),
        next_poll_at=now + policy.status_poll_interval,
        expires_at=now + policy.expires_after,
    )


def upgrade_after(upgrade: KycUpgrade, decision: KycDecision, now: datetime) -> KycUpgrade:
    """The upgrade once an applied decision of its review is executed; an ended one has no timers."""
    status = decision.upgrade_status
    assert status is not None, "only an applied upgrade decision moves the upgrade"
    changes: dict[str, Any] = {"status": status}
    if decision.submitted:
        changes |= {"submitted": True, "next_reminder_at": None}
    if decision.moderation_comment is not None:
        changes["moderation_comment"] = decision.moderation_comment
    if decision.reject_labels:
        changes["reject_labels"] = list(decision.reject_labels)
    if status is KycUpgradeStatus.APPROVED:  # an earlier RETRY's words no longer stand
        changes |= {"moderation_comment": None, "reject_labels": []}
    upgrade = upgrade.model_copy(update=changes)
    return upgrade_ended(upgrade, status, now) if status.ended else upgrade


def upgrade_ended(upgrade: KycUpgrade, status: KycUpgradeStatus, now: datetime) -> KycUpgrade:
    """The upgrade ended (a verdict, EXPIRED, CANCELLED): no more timers."""
    assert status.ended
    return upgrade.model_copy(
        update={"status": status, "ended_at": now, "next_reminder_at": None, "next_poll_at": None, "expires_at": None}
    )


def remembered(state: CustomerState, event: KycEvent) -> list[str]:
    """The dedupe keys to keep after applying (or ignoring) `event`: the newest REMEMBERED_EVENTS."""
    return [*state.applied_kyc_events, event.dedupe_key][-REMEMBERED_EVENTS:]


def is_new_verdict(state: CustomerState, event: KycEvent | None) -> bool:
    """Whether a polled review is one the workflow has not applied yet."""
    return event is not None and event.dedupe_key not in state.applied_kyc_events


# --- time ---------------------------------------------------------------------------------------


class TimerDue(StrEnum):
    """What a wake-up without a Sumsub event is for, most urgent first."""

    EXPIRE = "EXPIRE"
    POLL = "POLL"
    REMIND = "REMIND"


class Timers(Protocol):
    """What waits for a Sumsub verdict on a clock: onboarding (the customer's state) or a level upgrade."""

    next_reminder_at: datetime | None
    next_poll_at: datetime | None
    expires_at: datetime | None


def reminder_at(started: datetime | None, *, submitted: bool, sent: int, policy: OnboardingPolicy) -> datetime | None:
    """The next reminder, while nothing was submitted since `started` and the schedule has reminders left."""
    schedule = policy.reminders_after
    if started is None or submitted or sent >= len(schedule):
        return None
    return started + schedule[sent]


def next_reminder_at(state: CustomerState, policy: OnboardingPolicy) -> datetime | None:
    return reminder_at(state.kyc_started_at, submitted=state.kyc_submitted, sent=state.reminders_sent, policy=policy)


def next_upgrade_reminder_at(upgrade: KycUpgrade, policy: OnboardingPolicy) -> datetime | None:
    return reminder_at(upgrade.started_at, submitted=upgrade.submitted, sent=upgrade.reminders_sent, policy=policy)


def wake_at(state: Timers) -> datetime:
    """When a customer waiting for a verdict next needs the workflow: a reminder, a poll or expiry."""
    return min(t for t in (state.next_reminder_at, state.next_poll_at, state.expires_at) if t is not None)


def timer_due(state: Timers, now: datetime) -> TimerDue | None:
    """Which timer has come due at `now`; expiry wins over a poll, a poll over a reminder."""
    if state.expires_at is not None and now >= state.expires_at:
        return TimerDue.EXPIRE
    if state.next_poll_at is not None and now >= state.next_poll_at:
        return TimerDue.POLL
    if state.next_reminder_at is not None and now >= state.next_reminder_at:
        return TimerDue.REMIND
    return None
