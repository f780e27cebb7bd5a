"""What the rest of the bank is told: which lifecycle changes are published, and what their data holds.

The audit trail (`customer_events`) records every change for ops; a published event is a change other
systems act on (deposits and credit rely on ACTIVE). Its data holds ids, statuses, the stage, the
customer type and the account, never personal data: a consumer that needs a name reads it through the
API with its own token.
"""

from __future__ import annotations

from typing import Any

from domain.state import CustomerState

# The audit event type -> the published type. Audit types not listed are not published.
PUBLISHED_TYPES: dict[str, str] = {
    "customer.registered": "customer.registered",
    "kyc.started": "customer.kyc_started",
    "kyc.submitted": "customer.kyc_submitted",
    "kyc.resubmission_requested": "customer.kyc_resubmission_requested",
    "kyc.approved": "customer.kyc_approved",
    "kyc.declined": "customer.kyc_declined",
    "kyc.expired": "customer.onboarding_expired",
    "onboarding.failed": "customer.onboarding_failed",
    "customer.activated": "customer.activated",
    "customer.suspended": "customer.suspended",
    "customer.reactivated": "customer.reactivated",
    "customer.closed": "customer.closed",
    "customer.email_changed": "customer.email_changed",
    # Published so that a consumer told of a change Keycloak or Sumsub then refused learns it was undone.
    "customer.email_change_reverted": "customer.email_change_reverted",
    # Written by erasure (api/compliance.py), not the workflow: the id, status and the fact remain.
    "customer.erased": "customer.erased",
}

CUSTOMER_ERASED = "customer.erased"


def published_type(audit_type: str) -> str | None:
    return PUBLISHED_TYPES.get(audit_type)


def event_data(state: CustomerState) -> dict[str, Any]:
    """The data of every published event: where the customer is now, by ids and statuses only."""
    account = state.deposit_account
    return {
        "customerId": state.customer_id,
        "customerType": state.registration.customer_type.value,
        "status": state.status.value,
        "stage": state.stage.value,
        "kycStatus": state.kyc_status.value,
        "kycLevel": state.kyc_level.value,
        "depositAccount": None
        if account is None
        else {"id": account.id, "category": account.category.value, "status": account.status.value},
    }
