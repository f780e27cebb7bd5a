"""The KYC level upgrade's rules (`domain/kyc_rules.py`): who may start one, what its review's events do, its
timers. No Temporal, no I/O; `test_customer_workflow.py` and `test_kyc_level_upgrade.py` prove the wiring."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain import kyc_rules
from domain.customer import CustomerStatus, KycDecidedBy, KycLevel, KycStatus, KycUpgradeStatus
from domain.kyc import KycEventKind
from domain.kyc_rules import KycDecision, KycEffect, TimerDue
from domain.state import KycUpgrade, OnboardingPolicy
from integrations.sumsub.webhooks import kyc_event_from_webhook
from tests.test_kyc_rules import ONBOARDED, T0, event, state

ADVANCED = "advanced-kyc-level"
POLICY = OnboardingPolicy(
    reminders_after=[timedelta(days=1), timedelta(days=3)],
    expires_after=timedelta(days=30),
    status_poll_interval=timedelta(hours=6),
)


def upgrading(**fields: Any) -> dict[str, Any]:
    """An onboarded customer at BASIC whose upgrade to ADVANCED started at T0 (state fields)."""
    upgrade = KycUpgrade(level=KycLevel.ADVANCED, level_name=ADVANCED, requested_by="ops", started_at=T0, **fields)
    return ONBOARDED | {"kyc_level": KycLevel.BASIC, "kyc_upgrade": upgrade}


def test_who_may_start_an_upgrade() -> None:
    assert kyc_rules.upgrade_refusal(state(**upgrading(status=KycUpgradeStatus.DECLINED))) is None
    assert kyc_rules.upgrade_refusal(state(**ONBOARDED, kyc_level=KycLevel.BASIC)) is None
    refusals = {
        "waiting": state(),
        "suspended": state(**ONBOARDED | {"kyc_level": KycLevel.BASIC, "status": CustomerStatus.SUSPENDED}),
        "declined after activation": state(
            **ONBOARDED | {"kyc_level": KycLevel.BASIC, "kyc_status": KycStatus.DECLINED}
        ),
        "advanced": state(**ONBOARDED, kyc_level=KycLevel.ADVANCED),
        "in progress": state(**upgrading()),
    }
    reasons = {name: kyc_rules.upgrade_refusal(s) for name, s in refusals.items()}
    assert reasons == {
        "waiting": "a KYC level upgrade needs an onboarded customer (stage is AWAITING_KYC)",
        "suspended": "a KYC level upgrade needs an ACTIVE customer (status is SUSPENDED)",
        "declined after activation": "a KYC level upgrade needs an approved KYC (it is DECLINED)",
        "advanced": "the customer is at the highest KYC level (ADVANCED)",
        "in progress": f"an upgrade to ADVANCED is already in progress (since {T0.isoformat()})",
    }


def test_a_new_upgrade_goes_to_the_next_level_with_onboardings_timers() -> None:
    upgrade = kyc_rules.start_upgrade(
        state(**ONBOARDED, kyc_level=KycLevel.BASIC),
        level_name=ADVANCED,
        requested_by="customer-sub",
        now=T0,
        policy=POLICY,
    )
    assert (upgrade.level, upgrade.status, upgrade.in_progress) == (KycLevel.ADVANCED, KycUpgradeStatus.STARTED, True)
    assert (upgrade.next_reminder_at, upgrade.next_poll_at, upgrade.expires_at) == (
        T0 + timedelta(days=1),
        T0 + timedelta(hours=6),
        T0 + timedelta(days=30),
    )
    assert kyc_rules.wake_at(upgrade) == T0 + timedelta(hours=6)
    assert kyc_rules.timer_due(upgrade, T0 + timedelta(days=1)) is TimerDue.POLL
    assert kyc_rules.timer_due(upgrade, T0 + timedelta(days=30)) is TimerDue.EXPIRE
    reminded = upgrade.model_copy(update={"reminders_sent": 1})
    assert kyc_rules.next_upgrade_reminder_at(reminded, POLICY) == T0 + timedelta(days=3)
    assert kyc_rules.next_upgrade_reminder_at(reminded.model_copy(update={"submitted": True}), POLICY) is None


AT_ADVANCED = {"level_name": ADVANCED}
# (name, the upgrade's fields, the event, the upgrade decision expected)
UPGRADE_CASES: list[tuple[str, dict[str, Any], Any, KycDecision]] = [
    (
        "the level change Sumsub announces: started",
        {},
        event(KycEventKind.RESET, previous_level_name="basic-kyc-level", **AT_ADVANCED),
        KycDecision(upgrade=True, upgrade_status=KycUpgradeStatus.STARTED, occurred_at=T0 + timedelta(hours=1)),
    ),
    (
        "submitted: pending, no more reminders",
        {},
        event(KycEventKind.SUBMITTED, **AT_ADVANCED),
        KycDecision(
            upgrade=True, upgrade_status=KycUpgradeStatus.PENDING, submitted=True, occurred_at=T0 + timedelta(hours=1)
        ),
    ),
    (
        "GREEN: approved (the workflow then sets ADVANCED)",
        {"status": KycUpgradeStatus.PENDING, "submitted": True},
        event(KycEventKind.APPROVED, **AT_ADVANCED),
        KycDecision(
            upgrade=True,
            upgrade_status=KycUpgradeStatus.APPROVED,
            effect=KycEffect.REFRESH_PROFILE,  # what the new level verified is read
            submitted=True,
            occurred_at=T0 + timedelta(hours=1),
        ),
    ),
    (
        "RED FINAL: declined with why, never a suspension",
        {"status": KycUpgradeStatus.PENDING, "submitted": True},
        event(
            KycEventKind.DECLINED,
            moderation_comment="document expired",
            reject_labels=["EXPIRATION_DATE"],
            **AT_ADVANCED,
        ),
        KycDecision(
            upgrade=True,
            upgrade_status=KycUpgradeStatus.DECLINED,
            moderation_comment="document expired",
            reject_labels=("EXPIRATION_DATE",),
            submitted=True,
            occurred_at=T0 + timedelta(hours=1),
        ),
    ),
    (
        "applicantCreated-like events of the level: applied, nothing moves",
        {},
        event(KycEventKind.CREATED, **AT_ADVANCED),
        KycDecision(upgrade=True),
    ),
    (
        "an unknown Sumsub type at the level: recorded as ignored",
        {},
        event(KycEventKind.IGNORED, **AT_ADVANCED),
        KycDecision(upgrade=True, ignored="no lifecycle meaning"),
    ),
]


@pytest.mark.parametrize(
    ("upgrade_fields", "kyc_event", "expected"), [case[1:] for case in UPGRADE_CASES], ids=[c[0] for c in UPGRADE_CASES]
)
def test_an_upgrades_review_moves_only_the_upgrade(
    upgrade_fields: dict[str, Any], kyc_event: Any, expected: KycDecision
) -> None:
    assert kyc_rules.decide(state(**upgrading(**upgrade_fields)), kyc_event) == expected


def test_events_of_another_level_or_without_a_level_keep_the_onboarded_rules() -> None:
    during = state(**upgrading())
    red_at_basic = kyc_rules.decide(during, event(KycEventKind.DECLINED, level_name="basic-kyc-level"))
    assert (red_at_basic.upgrade, red_at_basic.effect) == (False, KycEffect.SUSPEND)
    assert kyc_rules.decide(during, event(KycEventKind.DECLINED)).effect is KycEffect.SUSPEND
    # Once the upgrade has ended, a RED at that level is a review of the customer like any other.
    ended = state(**upgrading(status=KycUpgradeStatus.APPROVED))
    assert kyc_rules.decide(ended, event(KycEventKind.DECLINED, **AT_ADVANCED)).effect is KycEffect.SUSPEND


def test_a_review_at_the_level_of_an_upgrade_that_ended_never_suspends_and_a_late_green_still_counts() -> None:
    for ended in (KycUpgradeStatus.EXPIRED, KycUpgradeStatus.DECLINED):
        after = state(**upgrading(status=ended))
        red = kyc_rules.decide(after, event(KycEventKind.DECLINED, **AT_ADVANCED))
        assert (red.ignored, red.effect, red.upgrade) == (
            f"a review at the level of an upgrade that ended ({ended.value}): recorded only",
            None,
            True,
        )
        green = kyc_rules.decide(after, event(KycEventKind.APPROVED, **AT_ADVANCED))
        assert (green.upgrade_status, green.ignored) == (KycUpgradeStatus.APPROVED, None)
    suspended = state(**upgrading(status=KycUpgradeStatus.CANCELLED) | {"status": CustomerStatus.SUSPENDED})
    assert kyc_rules.decide(suspended, event(KycEventKind.APPROVED, **AT_ADVANCED)).ignored is not None


def test_a_green_at_the_new_level_does_not_raise_a_customer_whose_kyc_was_declined() -> None:
    declined = state(**upgrading() | {"kyc_status": KycStatus.DECLINED})
    decision = kyc_rules.decide(declined, event(KycEventKind.APPROVED, **AT_ADVANCED))
    assert (decision.ignored, decision.upgrade_status) == ("KYC is DECLINED: the level is not raised", None)


def test_personal_data_changed_during_an_upgrade_waits_for_its_approval() -> None:
    during = kyc_rules.decide(state(**upgrading()), event(KycEventKind.PERSONAL_INFO_CHANGED))
    assert (during.ignored, during.effect) == (
        "a KYC upgrade's review is under way: the profile is read when it approves",
        None,
    )
    ended = kyc_rules.decide(
        state(**upgrading(status=KycUpgradeStatus.DECLINED)), event(KycEventKind.PERSONAL_INFO_CHANGED)
    )
    assert ended.effect is KycEffect.REFRESH_PROFILE


def test_an_upgrade_of_a_customer_approved_by_override_is_still_decided_by_its_review() -> None:
    overridden = state(**upgrading(), kyc_decided_by=KycDecidedBy.MANUAL_OVERRIDE)
    decision = kyc_rules.decide(overridden, event(KycEventKind.APPROVED, **AT_ADVANCED))
    assert decision.upgrade_status is KycUpgradeStatus.APPROVED
    assert kyc_rules.decide(overridden, event(KycEventKind.DECLINED)).ignored == kyc_rules.AFTER_OVERRIDE


def test_a_stale_or_duplicate_event_of_the_upgrade_changes_nothing() -> None:
    applied = state(**upgrading(), last_kyc_event_at=T0 + timedelta(hours=2), applied_kyc_events=["dup"])
    assert kyc_rules.decide(applied, event(KycEventKind.APPROVED, **AT_ADVANCED)).ignored == (
        "older than the newest event applied"
    )
    late = event(KycEventKind.APPROVED, at=T0 + timedelta(hours=3), key="dup", **AT_ADVANCED)
    assert kyc_rules.decide(applied, late).ignored == "duplicate"


def test_the_upgrade_after_a_verdict_has_its_outcome_and_no_timers() -> None:
    upgrade = upgrading(next_reminder_at=T0, next_poll_at=T0, expires_at=T0)["kyc_upgrade"]
    red = kyc_rules.decide(
        state(**upgrading()),
        event(KycEventKind.DECLINED, moderation_comment="no", reject_labels=["FORGERY"], **AT_ADVANCED),
    )
    declined = kyc_rules.upgrade_after(upgrade, red, T0 + timedelta(hours=1))
    assert (declined.status, declined.moderation_comment, declined.reject_labels) == (
        KycUpgradeStatus.DECLINED,
        "no",
        ["FORGERY"],
    )
    assert (declined.ended_at, declined.next_reminder_at, declined.next_poll_at, declined.expires_at) == (
        T0 + timedelta(hours=1),
        None,
        None,
        None,
    )
    assert not declined.in_progress
    retry = kyc_rules.decide(
        state(**upgrading()),
        event(
            KycEventKind.RESUBMISSION_REQUESTED, moderation_comment="blurry", reject_labels=["BAD_PHOTO"], **AT_ADVANCED
        ),
    )
    again = kyc_rules.upgrade_after(upgrade, retry, T0 + timedelta(hours=1))
    assert (again.status, again.in_progress, again.next_poll_at) == (KycUpgradeStatus.RESUBMISSION_REQUESTED, True, T0)
    assert (again.moderation_comment, again.reject_labels) == ("blurry", ["BAD_PHOTO"])
    green = kyc_rules.decide(state(**upgrading()), event(KycEventKind.APPROVED, **AT_ADVANCED))
    approved = kyc_rules.upgrade_after(again, green, T0 + timedelta(hours=2))
    assert (approved.status, approved.moderation_comment, approved.reject_labels) == (
        KycUpgradeStatus.APPROVED,
        None,
        [],
    )
    expired = kyc_rules.upgrade_ended(upgrade, KycUpgradeStatus.EXPIRED, T0 + timedelta(days=30))
    assert (expired.status, expired.in_progress, expired.next_poll_at) == (KycUpgradeStatus.EXPIRED, False, None)


def test_the_audit_row_of_an_upgrade_event_names_the_level_and_a_reds_reason() -> None:
    red = event(KycEventKind.DECLINED, moderation_comment="forged", reject_labels=["FORGERY"], **AT_ADVANCED)
    decision = kyc_rules.decide(state(**upgrading()), red)
    assert decision.audit(red) == (
        "kyc.upgrade_declined",
        {
            "sumsub_type": "sumsub:DECLINED",
            "kind": "DECLINED",
            "level_name": ADVANCED,
            "moderation_comment": "forged",
            "reject_labels": ["FORGERY"],
        },
    )
    changed = event(KycEventKind.RESET, previous_level_name="basic-kyc-level", **AT_ADVANCED)
    assert kyc_rules.decide(state(**upgrading()), changed).audit(changed)[0] == "kyc.upgrade_reset"
    assert kyc_rules.decide(state(**upgrading()), changed).audit(changed)[1]["previous_level_name"] == "basic-kyc-level"


def test_a_level_change_webhook_carries_both_levels_into_the_event() -> None:
    payload = {
        "type": "applicantLevelChanged",
        "externalUserId": "c-1",
        "applicantId": "applicant-1",
        "levelName": ADVANCED,
        "previousLevelName": "basic-kyc-level",
        "createdAtMs": "2026-12-01 10:00:00.000",
    }
    mapped = kyc_event_from_webhook(payload, dedupe_key="k", received_at=T0 + timedelta(hours=1))
    assert (mapped.kind, mapped.level_name, mapped.previous_level_name) == (
        KycEventKind.RESET,
        ADVANCED,
        "basic-kyc-level",
    )
    reviewed = kyc_event_from_webhook(
        {
            "type": "applicantReviewed",
            "externalUserId": "c-1",
            "levelName": ADVANCED,
            "reviewResult": {"reviewAnswer": "RED", "reviewRejectType": "FINAL", "rejectLabels": ["FORGERY", 7]},
        },
        dedupe_key="k2",
        received_at=T0,
    )
    assert (reviewed.kind, reviewed.reject_labels) == (KycEventKind.DECLINED, ["FORGERY"])
