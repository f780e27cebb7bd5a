"""The KYC decision rules (`domain/kyc_rules.py`) as tables of cases: no Temporal, no I/O.

The workflow tests (`test_customer_workflow.py`) show the workflow executes these decisions; here every
rule is pinned on its own: which event applies while waiting or after onboarding, duplicates, stale and
misrouted events, RED suspending and GREEN lifting only that suspension, the reminder schedule, and
which timer a wake-up is for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import kyc_rules
from domain.customer import CustomerStatus, CustomerType, KycDecidedBy, KycStatus, OnboardingStage
from domain.errors import ErrorType
from domain.kyc import KycEvent, KycEventKind
from domain.kyc_rules import KYC_REVIEW_SUSPENSION, KycDecision, KycEffect, TimerDue
from domain.state import CustomerState, OnboardingPolicy, Registration
from domain.transitions import Step, next_step
from integrations.sumsub.webhooks import kyc_event_from_webhook

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
APPLICANT = "applicant-1"


def state(**fields: Any) -> CustomerState:
    """A customer waiting for KYC (AWAITING_KYC, KYC started at T0) unless `fields` say otherwise."""
    defaults: dict[str, Any] = {
        "stage": OnboardingStage.AWAITING_KYC,
        "kyc_status": KycStatus.STARTED,
        "applicant_id": APPLICANT,
        "kyc_started_at": T0,
    }
    return CustomerState(
        registration=Registration(customer_id="c-1", email="jane@example.com", customer_type=CustomerType.INDIVIDUAL),
        created_at=T0,
        updated_at=T0,
        **(defaults | fields),
    )


def event(
    kind: KycEventKind, *, at: datetime = T0 + timedelta(hours=1), key: str | None = None, **fields: Any
) -> KycEvent:
    return KycEvent(
        kind=kind,
        sumsub_type=f"sumsub:{kind.value}",
        applicant_id=fields.pop("applicant_id", APPLICANT),
        occurred_at=at,
        dedupe_key=key or f"{kind.value}:{at.isoformat()}",
        **fields,
    )


ONBOARDED = {"stage": OnboardingStage.ONBOARDED, "status": CustomerStatus.ACTIVE, "kyc_status": KycStatus.APPROVED}

# (name, state fields, event, the decision expected)
CASES: list[tuple[str, dict[str, Any], KycEvent, KycDecision]] = [
    (
        "submitted while waiting: in review, no more reminders",
        {},
        event(KycEventKind.SUBMITTED),
        KycDecision(
            kyc_status=KycStatus.PENDING,
            stage=OnboardingStage.KYC_IN_REVIEW,
            submitted=True,
            occurred_at=T0 + timedelta(hours=1),
        ),
    ),
    (
        "approved while waiting: KYC_APPROVED with the moderation comment",
        {"stage": OnboardingStage.KYC_IN_REVIEW, "kyc_status": KycStatus.PENDING},
        event(KycEventKind.APPROVED, moderation_comment="all good"),
        KycDecision(
            kyc_status=KycStatus.APPROVED,
            stage=OnboardingStage.KYC_APPROVED,
            moderation_comment="all good",
            submitted=True,
            occurred_at=T0 + timedelta(hours=1),
        ),
    ),
    (
        "declined while waiting: onboarding ends",
        {"stage": OnboardingStage.KYC_IN_REVIEW},
        event(KycEventKind.DECLINED, moderation_comment="forged"),
        KycDecision(
            kyc_status=KycStatus.DECLINED,
            stage=OnboardingStage.KYC_DECLINED,
            moderation_comment="forged",
            submitted=True,
            effect=KycEffect.END_ONBOARDING,
            occurred_at=T0 + timedelta(hours=1),
        ),
    ),
    (
        "resubmission requested while waiting keeps the earlier comment when none is given",
        {"stage": OnboardingStage.KYC_IN_REVIEW, "moderation_comment": "blurry photo"},
        event(KycEventKind.RESUBMISSION_REQUESTED),
        KycDecision(
            kyc_status=KycStatus.RESUBMISSION_REQUESTED,
            stage=OnboardingStage.KYC_RESUBMISSION_REQUESTED,
            moderation_comment="blurry photo",
            submitted=True,
            occurred_at=T0 + timedelta(hours=1),
        ),
    ),
    (
        "reset while waiting: back to AWAITING_KYC, not a submission",
        {"stage": OnboardingStage.KYC_ON_HOLD, "kyc_status": KycStatus.ON_HOLD},
        event(KycEventKind.RESET),
        KycDecision(
            kyc_status=KycStatus.STARTED, stage=OnboardingStage.AWAITING_KYC, occurred_at=T0 + timedelta(hours=1)
        ),
    ),
    ("applicant created while waiting: applied, changes nothing", {}, event(KycEventKind.CREATED), KycDecision()),
    (
        "personal info changed while waiting: nothing verified yet (the GREEN review reads it)",
        {"stage": OnboardingStage.KYC_IN_REVIEW, "kyc_status": KycStatus.PENDING},
        event(KycEventKind.PERSONAL_INFO_CHANGED),
        KycDecision(ignored="not verified yet: the profile is read when KYC approves"),
    ),
    (
        "personal info changed after a decline: onboarding ended, nothing to refresh",
        {"stage": OnboardingStage.KYC_DECLINED, "kyc_status": KycStatus.DECLINED},
        event(KycEventKind.PERSONAL_INFO_CHANGED),
        KycDecision(ignored="onboarding already ended (KYC_DECLINED)"),
    ),
    (
        "personal info changed after activation: read the profile again, nothing else moves",
        ONBOARDED,
        event(KycEventKind.PERSONAL_INFO_CHANGED),
        KycDecision(effect=KycEffect.REFRESH_PROFILE),
    ),
    (
        "personal info changed is never stale: a read is always current",
        ONBOARDED | {"last_kyc_event_at": T0 + timedelta(days=1)},
        event(KycEventKind.PERSONAL_INFO_CHANGED),
        KycDecision(effect=KycEffect.REFRESH_PROFILE),
    ),
    (
        "a repeated personal-info delivery is a duplicate",
        ONBOARDED | {"applied_kyc_events": ["info-1"]},
        event(KycEventKind.PERSONAL_INFO_CHANGED, key="info-1"),
        KycDecision(ignored="duplicate"),
    ),
    (
        "personal info of another applicant is ignored",
        ONBOARDED,
        event(KycEventKind.PERSONAL_INFO_CHANGED, applicant_id="someone-else"),
        KycDecision(ignored="applicant id differs from the one on file"),
    ),
    (
        "personal info changed for a closed customer changes nothing",
        {"stage": OnboardingStage.CLOSED},
        event(KycEventKind.PERSONAL_INFO_CHANGED),
        KycDecision(ignored="onboarding already ended (CLOSED)"),
    ),
    (
        "an unknown Sumsub type has no lifecycle meaning",
        {},
        event(KycEventKind.IGNORED),
        KycDecision(ignored="no lifecycle meaning"),
    ),
    (
        "a duplicate delivery is ignored",
        {"applied_kyc_events": ["dup"]},
        event(KycEventKind.APPROVED, key="dup"),
        KycDecision(ignored="duplicate"),
    ),
    (
        "an event for another applicant is ignored",
        {},
        event(KycEventKind.APPROVED, applicant_id="someone-else"),
        KycDecision(ignored="applicant id differs from the one on file"),
    ),
    (
        "an event older than the newest applied is ignored",
        {"last_kyc_event_at": T0 + timedelta(hours=2)},
        event(KycEventKind.SUBMITTED, at=T0 + timedelta(hours=1)),
        KycDecision(ignored="older than the newest event applied"),
    ),
    (
        "RED review of an active customer: suspend, KYC declined",
        ONBOARDED,
        event(KycEventKind.DECLINED, moderation_comment="sanctions hit"),
        KycDecision(
            kyc_status=KycStatus.DECLINED,
            moderation_comment="sanctions hit",
            effect=KycEffect.SUSPEND,
            occurred_at=T0 + timedelta(hours=1),
        ),
    ),
    (
        "RED review of a customer ops already suspended: recorded, no second suspension",
        ONBOARDED | {"status": CustomerStatus.SUSPENDED, "suspension_reason": "fraud check"},
        event(KycEventKind.RESUBMISSION_REQUESTED),
        KycDecision(kyc_status=KycStatus.RESUBMISSION_REQUESTED, occurred_at=T0 + timedelta(hours=1)),
    ),
    (
        "GREEN after a RED review: lifts the suspension that review caused",
        ONBOARDED
        | {
            "status": CustomerStatus.SUSPENDED,
            "kyc_status": KycStatus.DECLINED,
            "suspension_reason": KYC_REVIEW_SUSPENSION,
        },
        event(KycEventKind.APPROVED),
        KycDecision(kyc_status=KycStatus.APPROVED, effect=KycEffect.REACTIVATE, occurred_at=T0 + timedelta(hours=1)),
    ),
    (
        "GREEN after a RED review does not lift a suspension ops made",
        ONBOARDED
        | {"status": CustomerStatus.SUSPENDED, "kyc_status": KycStatus.DECLINED, "suspension_reason": "fraud check"},
        event(KycEventKind.APPROVED),
        KycDecision(kyc_status=KycStatus.APPROVED, occurred_at=T0 + timedelta(hours=1)),
    ),
    (
        "GREEN of an already approved customer changes nothing",
        ONBOARDED,
        event(KycEventKind.APPROVED),
        KycDecision(ignored="no effect on an onboarded customer in this state"),
    ),
    (
        "a submission after onboarding changes nothing",
        ONBOARDED,
        event(KycEventKind.SUBMITTED),
        KycDecision(ignored="no effect on an onboarded customer in this state"),
    ),
    (
        "events after onboarding ended otherwise (declined) are ignored",
        {"stage": OnboardingStage.KYC_DECLINED, "kyc_status": KycStatus.DECLINED},
        event(KycEventKind.APPROVED),
        KycDecision(ignored="onboarding already ended (KYC_DECLINED)"),
    ),
]


@pytest.mark.parametrize(("fields", "kyc_event", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_decide(fields: dict[str, Any], kyc_event: KycEvent, expected: KycDecision) -> None:
    assert kyc_rules.decide(state(**fields), kyc_event) == expected


def test_the_audit_row_names_the_event_or_why_it_was_ignored() -> None:
    applied = event(KycEventKind.APPROVED)
    assert KycDecision(kyc_status=KycStatus.APPROVED).audit(applied) == (
        "kyc.approved",
        {"sumsub_type": "sumsub:APPROVED", "kind": "APPROVED"},
    )
    assert KycDecision(ignored="duplicate").audit(applied) == (
        "kyc.event_ignored",
        {"sumsub_type": "sumsub:APPROVED", "kind": "APPROVED", "ignored": "duplicate"},
    )


def test_events_are_applied_oldest_first_and_only_the_newest_keys_are_remembered() -> None:
    late, early = event(KycEventKind.APPROVED, at=T0 + timedelta(hours=3)), event(KycEventKind.SUBMITTED, at=T0)
    assert kyc_rules.oldest_first([late, early]) == [early, late]
    full = state(applied_kyc_events=[f"k{i}" for i in range(kyc_rules.REMEMBERED_EVENTS)])
    kept = kyc_rules.remembered(full, late)
    assert len(kept) == kyc_rules.REMEMBERED_EVENTS and kept[-1] == late.dedupe_key and "k0" not in kept


def test_a_polled_verdict_is_new_only_once() -> None:
    verdict = event(KycEventKind.APPROVED, key="poll:review-1:attempt-1")
    assert kyc_rules.is_new_verdict(state(), verdict)
    assert not kyc_rules.is_new_verdict(state(applied_kyc_events=[verdict.dedupe_key]), verdict)
    assert not kyc_rules.is_new_verdict(state(), None)


POLICY = OnboardingPolicy(reminders_after=[timedelta(days=1), timedelta(days=3), timedelta(days=7)])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"reminders_sent": 0}, T0 + timedelta(days=1)),
        ({"reminders_sent": 1}, T0 + timedelta(days=3)),
        ({"reminders_sent": 2}, T0 + timedelta(days=7)),
        ({"reminders_sent": 3}, None),  # the schedule is used up
        ({"kyc_submitted": True}, None),  # documents are in: nothing to remind of
        ({"kyc_started_at": None}, None),  # KYC has not started
    ],
)
def test_reminder_schedule(fields: dict[str, Any], expected: datetime | None) -> None:
    assert kyc_rules.next_reminder_at(state(**fields), POLICY) == expected


def test_the_workflow_wakes_for_the_earliest_timer_and_expiry_wins_over_a_poll_over_a_reminder() -> None:
    timers = state(
        next_reminder_at=T0 + timedelta(days=1),
        next_poll_at=T0 + timedelta(hours=6),
        expires_at=T0 + timedelta(days=30),
    )
    assert kyc_rules.wake_at(timers) == T0 + timedelta(hours=6)
    assert kyc_rules.wake_at(timers.model_copy(update={"next_poll_at": None})) == T0 + timedelta(days=1)
    assert kyc_rules.timer_due(timers, T0 + timedelta(hours=5)) is None
    assert kyc_rules.timer_due(timers, T0 + timedelta(hours=6)) is TimerDue.POLL
    all_due = timers.model_copy(update={"next_poll_at": T0, "next_reminder_at": T0})
    assert kyc_rules.timer_due(all_due, T0 + timedelta(days=2)) is TimerDue.POLL
    assert (
        kyc_rules.timer_due(all_due.model_copy(update={"next_poll_at": None}), T0 + timedelta(days=2))
        is TimerDue.REMIND
    )
    assert kyc_rules.timer_due(all_due, T0 + timedelta(days=30)) is TimerDue.EXPIRE


@pytest.mark.parametrize(
    ("stage", "step"),
    [
        (OnboardingStage.REGISTERED, Step.OPEN_KYC_CASE),
        (OnboardingStage.AWAITING_KYC, Step.WAIT_FOR_VERDICT),
        (OnboardingStage.KYC_ON_HOLD, Step.WAIT_FOR_VERDICT),
        (OnboardingStage.KYC_APPROVED, Step.ACTIVATE),
        (OnboardingStage.ONBOARDED, Step.SERVE),
        (OnboardingStage.FAILED, Step.SERVE),
    ],
)
def test_each_stage_has_its_next_step(stage: OnboardingStage, step: Step) -> None:
    assert next_step(stage) is step


def test_every_failure_type_has_an_api_meaning() -> None:
    """A new ErrorType without a row in the API's table would reach callers as SERVICE_UNAVAILABLE."""
    from api.errors import ERROR_TYPES, BadUserInput, Conflict, Unavailable, api_error_for

    assert set(ERROR_TYPES) == set(ErrorType)
    assert isinstance(api_error_for(ErrorType.ILLEGAL_TRANSITION, "no"), Conflict)
    assert isinstance(api_error_for(ErrorType.INVALID_INPUT, "no"), BadUserInput)
    assert isinstance(api_error_for("SomethingElse", "no"), Unavailable)


# --- one future-dated event must not freeze a customer's KYC (issue: bounded event time) -----------------

RECEIVED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def reviewed(answer: str, created_at: str, reject_type: str | None = None) -> KycEvent:
    """An `applicantReviewed` webhook as the relay maps it, received at RECEIVED."""
    result = {"reviewAnswer": answer} | ({"reviewRejectType": reject_type} if reject_type else {})
    payload = {"type": "applicantReviewed", "applicantId": APPLICANT, "createdAtMs": created_at, "reviewResult": result}
    return kyc_event_from_webhook(payload, dedupe_key=f"{answer}:{created_at}", received_at=RECEIVED)


def test_an_event_stamped_far_after_its_receipt_is_ordered_by_receipt_and_says_so() -> None:
    future = reviewed("RED", "2099-01-01 00:00:00.000", "FINAL")
    assert future.occurred_at == RECEIVED and future.stamped_at == datetime(2099, 1, 1, tzinfo=UTC)
    event_type, details = kyc_rules.decide(state(stage=OnboardingStage.KYC_IN_REVIEW), future).audit(future)
    assert event_type == "kyc.declined" and "2099-01-01" in details["ordered_by_receipt"]
    # Within the tolerance (clocks drift by seconds) Sumsub's own time still orders the event.
    skewed = reviewed("GREEN", "2026-12-01 12:04:00.000")
    assert skewed.occurred_at == datetime(2026, 12, 1, 12, 4, tzinfo=UTC) and skewed.stamped_at is None
    assert (
        "ordered_by_receipt"
        not in kyc_rules.decide(state(stage=OnboardingStage.KYC_IN_REVIEW), skewed).audit(skewed)[1]
    )


def test_a_red_dated_2099_does_not_lock_out_a_later_real_green() -> None:
    """After a suspension by a RED "from 2099", the next real GREEN is applied and lifts it."""
    red = reviewed("RED", "2099-01-01 00:00:00.000", "FINAL")
    suspended = state(**ONBOARDED)
    assert kyc_rules.decide(suspended, red).effect is KycEffect.SUSPEND
    after_red = suspended.model_copy(
        update={
            "status": CustomerStatus.SUSPENDED,
            "kyc_status": KycStatus.DECLINED,
            "suspension_reason": KYC_REVIEW_SUSPENSION,
            "last_kyc_event_at": red.occurred_at,
        }
    )
    green = event(KycEventKind.APPROVED, at=RECEIVED + timedelta(minutes=10))
    assert kyc_rules.decide(after_red, green) == KycDecision(
        kyc_status=KycStatus.APPROVED, effect=KycEffect.REACTIVATE, occurred_at=green.occurred_at
    )


def test_a_green_dated_2099_does_not_shield_the_customer_from_a_later_real_red() -> None:
    green = reviewed("GREEN", "2099-01-01 00:00:00.000")
    onboarded = state(**ONBOARDED, last_kyc_event_at=green.occurred_at)
    red = event(KycEventKind.DECLINED, at=RECEIVED + timedelta(minutes=10))
    assert kyc_rules.decide(onboarded, red).effect is KycEffect.SUSPEND


def test_an_ordinary_reordering_is_still_applied_oldest_first() -> None:
    approved = reviewed("GREEN", "2026-12-01 11:59:00.000")
    submitted = event(KycEventKind.SUBMITTED, at=datetime(2026, 12, 1, 11, 58, tzinfo=UTC))
    assert kyc_rules.oldest_first([approved, submitted]) == [submitted, approved]
    # Applied in that order, the stale submission arriving last would be ignored.
    after = state(stage=OnboardingStage.KYC_APPROVED, last_kyc_event_at=approved.occurred_at)
    assert kyc_rules.reason_to_ignore(after, submitted) == "older than the newest event applied"


@pytest.mark.parametrize(
    "kind", [KycEventKind.APPROVED, KycEventKind.DECLINED, KycEventKind.RESUBMISSION_REQUESTED, KycEventKind.ON_HOLD]
)
def test_after_a_manual_override_sumsubs_verdicts_are_recorded_not_applied(kind: KycEventKind) -> None:
    overridden = state(
        stage=OnboardingStage.ONBOARDED,
        status=CustomerStatus.ACTIVE,
        kyc_status=KycStatus.APPROVED,
        kyc_decided_by=KycDecidedBy.MANUAL_OVERRIDE,
    )
    decision = kyc_rules.decide(overridden, event(kind))
    assert decision.ignored == kyc_rules.AFTER_OVERRIDE and decision.effect is None
    assert decision.audit(event(kind))[0] == "kyc.event_ignored"
    # Decided by Sumsub, the same RED review suspends as before.
    by_sumsub = overridden.model_copy(update={"kyc_decided_by": KycDecidedBy.SUMSUB})
    if kind is KycEventKind.DECLINED:
        assert kyc_rules.decide(by_sumsub, event(kind)).effect is KycEffect.SUSPEND
    # A personal-info change still refreshes the profile.
    assert kyc_rules.decide(overridden, event(KycEventKind.PERSONAL_INFO_CHANGED)).effect is KycEffect.REFRESH_PROFILE
