"""Who a customer is, as data: the enums, the one customer-type mapping, and the identity helpers.

Nothing in `domain/` does I/O or imports Temporal, so workflow code can use it and unit tests need no servers.
"""

from __future__ import annotations

import uuid
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
    CustomerType.PRIVATE_COMPANY: CustomerTypeProfile(
        "Private corporation", AccountCategory.BUSINESS, VerificationFlow.KYB
    ),
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


class KycDecidedBy(StrEnum):
    """Who made the KYC outcome that stands: Sumsub's review, or compliance officers under four eyes."""

    SUMSUB = "SUMSUB"
    MANUAL_OVERRIDE = "MANUAL_OVERRIDE"


class KycLevel(StrEnum):
    NOT_KYCED = "NOT_KYCED"
    BASIC = "BASIC"
    ADVANCED = "ADVANCED"


class KycUpgradeStatus(StrEnum):
    """Where a move to a higher KYC level stands; the customer keeps its level until it is APPROVED."""

    STARTED = "STARTED"  # the applicant is at the new level: documents requested
    PENDING = "PENDING"
    ON_HOLD = "ON_HOLD"
    RESUBMISSION_REQUESTED = "RESUBMISSION_REQUESTED"
    APPROVED = "APPROVED"  # the customer is at the new level
    DECLINED = "DECLINED"  # Sumsub's RED review: the customer keeps its level, the reason is recorded
    EXPIRED = "EXPIRED"  # nothing decided in time (the onboarding policy's `expires_after`)
    CANCELLED = "CANCELLED"  # the customer was closed meanwhile

    @property
    def ended(self) -> bool:
        return self in _UPGRADE_ENDED


_UPGRADE_ENDED = frozenset(
    {KycUpgradeStatus.APPROVED, KycUpgradeStatus.DECLINED, KycUpgradeStatus.EXPIRED, KycUpgradeStatus.CANCELLED}
)


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


def normalise_email(email: str) -> str:
    """The identity of an email address: trimmed and lower-cased (registration is case-insensitive)."""
    return email.strip().lower()


def mask_email(email: str) -> str:
    """`j***@example.com`: enough for ops to recognise a customer, not enough to leak the address."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


WORKFLOW_ID_PREFIX = "customer-"


def workflow_id_for(customer_id: str) -> str:
    """One workflow per customer, named after it, so anyone holding the id can address it."""
    return f"{WORKFLOW_ID_PREFIX}{customer_id}"


def customer_id_of_workflow(workflow_id: str) -> str | None:
    """The customer a workflow id names (`workflow_id_for`'s inverse), or None for any other workflow."""
    name = workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
    if name == workflow_id:
        return None
    try:
        return str(uuid.UUID(name))  # customer ids are UUIDs (api.service.customer_id_for_email)
    except ValueError:
        return None
