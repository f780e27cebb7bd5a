"""The customer domain as data: enums, the one customer-type mapping, and the stage transition table.

Nothing here does I/O, so workflow code can import it and unit tests need no servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CustomerType(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    GOVERNMENT_ENTITY = "GOVERNMENT_ENTITY"
    PRIVATE_COMPANY = "PRIVATE_COMPANY"
    BANK = "BANK"
    FINANCIAL_INSTITUTION = "FINANCIAL_INSTITUTION"
    FOREIGN_AGENCY_OR_SUBSIDIARY = "FOREIGN_AGENCY_OR_SUBSIDIARY"
    NON_DOMICILED_COMPANY = "NON_DOMICILED_COMPANY"


class AccountCategory(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    GOVERNMENT = "GOVERNMENT"
    BUSINESS = "BUSINESS"
    INTERBANK = "INTERBANK"
    INSTITUTIONAL = "INSTITUTIONAL"
    FOREIGN = "FOREIGN"
    NON_RESIDENT = "NON_RESIDENT"


class VerificationFlow(StrEnum):
    """Which Sumsub flow a customer type goes through: KYC for people, KYB for organisations."""

    KYC = "KYC"
    KYB = "KYB"


@dataclass(frozen=True)
class CustomerTypeProfile:
    description: str
    account_category: AccountCategory
    flow: VerificationFlow


# The one place that maps a customer type to its account category and Sumsub flow (lifecycle.md seed table).
CUSTOMER_TYPES: dict[CustomerType, CustomerTypeProfile] = {
    CustomerType.INDIVIDUAL: CustomerTypeProfile("Natural person", AccountCategory.INDIVIDUAL, VerificationFlow.KYC),
    CustomerType.GOVERNMENT_ENTITY: CustomerTypeProfile(
        "Government organization", AccountCategory.GOVERNMENT, VerificationFlow.KYB
    ),
    CustomerType.PRIVATE_COMPANY: CustomerTypeProfile("Private corporation", AccountCategory.BUSINESS, VerificationFlow.KYB),
    CustomerType.BANK: CustomerTypeProfile("Banking institution", AccountCategory.INTERBANK, VerificationFlow.KYB),
    CustomerType.FINANCIAL_INSTITUTION: CustomerTypeProfile(
        "Financial services company", AccountCategory.INSTITUTIONAL, VerificationFlow.KYB
    ),
    CustomerType.FOREIGN_AGENCY_OR_SUBSIDIARY: CustomerTypeProfile(
        "Foreign agency/subsidiary", AccountCategory.FOREIGN, VerificationFlow.KYB
    ),
    CustomerType.NON_DOMICILED_COMPANY: CustomerTypeProfile(
        "Non-domiciled corporation", AccountCategory.NON_RESIDENT, VerificationFlow.KYB
    ),
}


class CustomerStatus(StrEnum):
    INACTIVE = "INACTIVE"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"


class KycStatus(StrEnum):
    NOT_STARTED = "NOT_STARTED"
    STARTED = "STARTED"
    PENDING = "PENDING"
    ON_HOLD = "ON_HOLD"
    RESUBMISSION_REQUESTED = "RESUBMISSION_REQUESTED"
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"


class KycLevel(StrEnum):
    NOT_KYCED = "NOT_KYCED"
    BASIC = "BASIC"
    ADVANCED = "ADVANCED"


class OnboardingStage(StrEnum):
    REGISTERED = "REGISTERED"
    AWAITING_KYC = "AWAITING_KYC"
    KYC_IN_REVIEW = "KYC_IN_REVIEW"
    KYC_ON_HOLD = "KYC_ON_HOLD"
    KYC_RESUBMISSION_REQUESTED = "KYC_RESUBMISSION_REQUESTED"
    KYC_APPROVED = "KYC_APPROVED"
    ONBOARDED = "ONBOARDED"
    KYC_DECLINED = "KYC_DECLINED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"
    CLOSED = "CLOSED"


class DepositAccountStatus(StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


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
    _S.KYC_DECLINED: frozenset({_S.CLOSED}),
    _S.EXPIRED: frozenset({_S.CLOSED}),
    _S.FAILED: frozenset({_S.REGISTERED, _S.CLOSED}),
    _S.CLOSED: frozenset(),
}

WAITING_FOR_KYC_STAGES = frozenset(_WAITING)


def next_stage(current: OnboardingStage, target: OnboardingStage) -> OnboardingStage:
    """`target` if the table allows it (staying put is always allowed), else IllegalTransition."""
    if target == current or target in STAGE_TRANSITIONS[current]:
        return target
    raise IllegalTransition(current, target)


def normalise_email(email: str) -> str:
    """The identity of an email address: trimmed and lower-cased (registration is case-insensitive)."""
    return email.strip().lower()


def mask_email(email: str) -> str:
    """`j***@example.com`: enough for ops to recognise a customer, not enough to leak the address."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


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
