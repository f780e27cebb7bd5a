"""Where a customer may go next: the onboarding stage table and which ops actions each state refuses."""

from __future__ import annotations

from enum import StrEnum

from domain.customer import CustomerStatus, KycStatus, OnboardingStage


class IllegalTransition(Exception):
    """A move the lifecycle does not allow; refused rather than ignored."""

    def __init__(self, current: StrEnum, target: StrEnum) -> None:
        super().__init__(f"cannot move from {current.value} to {target.value}")
        self.current = current
        self.target = target


_S = OnboardingStage
_WAITING = {_S.AWAITING_KYC, _S.KYC_IN_REVIEW, _S.KYC_ON_HOLD, _S.KYC_RESUBMISSION_REQUESTED}
_TERMINAL_EXITS = {_S.KYC_DECLINED, _S.EXPIRED, _S.FAILED, _S.CLOSED}

# Where each stage may go next. Waiting stages move freely among themselves because Sumsub events
# arrive in any order; ordering by createdAtMs happens before a transition is even attempted.
STAGE_TRANSITIONS: dict[OnboardingStage, frozenset[OnboardingStage]] = {
    _S.REGISTERED: frozenset({_S.AWAITING_KYC, _S.FAILED, _S.CLOSED}),
    **{stage: frozenset((_WAITING - {stage}) | {_S.KYC_APPROVED} | _TERMINAL_EXITS) for stage in _WAITING},
    _S.KYC_APPROVED: frozenset({_S.ONBOARDED, _S.FAILED, _S.CLOSED}),
    _S.ONBOARDED: frozenset({_S.CLOSED}),
    # A confirmed four-eyes override approves a declined or expired customer (domain/four_eyes.py).
    _S.KYC_DECLINED: frozenset({_S.KYC_APPROVED, _S.CLOSED}),
    _S.EXPIRED: frozenset({_S.KYC_APPROVED, _S.CLOSED}),
    _S.FAILED: frozenset({_S.REGISTERED, _S.CLOSED}),
    _S.CLOSED: frozenset(),
}

WAITING_FOR_KYC_STAGES = frozenset(_WAITING)


def next_stage(current: OnboardingStage, target: OnboardingStage) -> OnboardingStage:
    """`target` if the table allows it (staying put is always allowed), else IllegalTransition."""
    if target == current or target in STAGE_TRANSITIONS[current]:
        return target
    raise IllegalTransition(current, target)


class CustomerAction(StrEnum):
    """What ops (or Sumsub, for automatic suspension) may do to a customer after registration."""

    SUSPEND = "SUSPEND"
    REACTIVATE = "REACTIVATE"
    CLOSE = "CLOSE"
    RETRY_ONBOARDING = "RETRY_ONBOARDING"
    CHANGE_EMAIL = "CHANGE_EMAIL"


# Which customer statuses (and, for a retry, which stage) allow each action. A closed customer allows none.
ACTION_REQUIRES_STATUS: dict[CustomerAction, frozenset[CustomerStatus]] = {
    CustomerAction.SUSPEND: frozenset({CustomerStatus.ACTIVE}),
    CustomerAction.REACTIVATE: frozenset({CustomerStatus.SUSPENDED}),
    CustomerAction.CLOSE: frozenset(CustomerStatus),
    CustomerAction.RETRY_ONBOARDING: frozenset({CustomerStatus.INACTIVE}),
    CustomerAction.CHANGE_EMAIL: frozenset(CustomerStatus),
}


def refusal(
    action: CustomerAction, status: CustomerStatus, stage: OnboardingStage, kyc_status: KycStatus
) -> str | None:
    """Why `action` is not allowed now, or None when it is."""
    if stage is OnboardingStage.CLOSED:
        return "the customer is closed; no further changes are allowed"
    if status not in ACTION_REQUIRES_STATUS[action]:
        return f"cannot {action.value.lower().replace('_', ' ')} a customer whose status is {status.value}"
    if action is CustomerAction.REACTIVATE and kyc_status is not KycStatus.APPROVED:
        return f"cannot reactivate while the latest KYC review is {kyc_status.value}"
    if action is CustomerAction.RETRY_ONBOARDING and stage is not OnboardingStage.FAILED:
        return f"onboarding can be retried only after it FAILED (stage is {stage.value})"
    return None


class Step(StrEnum):
    """What the workflow does next in a stage: the lifecycle as a table, executed by CustomerWorkflow."""

    OPEN_KYC_CASE = "OPEN_KYC_CASE"  # Keycloak user, Sumsub applicant, WebSDK link
    WAIT_FOR_VERDICT = "WAIT_FOR_VERDICT"  # Sumsub events, reminders, polls, expiry
    ACTIVATE = "ACTIVATE"  # deposit account, ACTIVE
    SERVE = "SERVE"  # later KYC reviews until ops close the customer


def next_step(stage: OnboardingStage) -> Step:
    if stage is OnboardingStage.REGISTERED:
        return Step.OPEN_KYC_CASE
    if stage in WAITING_FOR_KYC_STAGES:
        return Step.WAIT_FOR_VERDICT
    if stage is OnboardingStage.KYC_APPROVED:
        return Step.ACTIVATE
    return Step.SERVE
