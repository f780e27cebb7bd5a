"""What the rest of the bank is told: which lifecycle changes are published, and what their data holds.

The audit trail (`customer_events`) records every change for ops; a published event is a change other
systems act on (deposits and credit rely on ACTIVE). Its data holds ids, statuses, the stage, the
customer type and the account, never personal data: a consumer that needs a name reads it through the
API with its own token.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from domain.state import CustomerState

_FORMAT = JSONFormat()

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
    # Sumsub approved the customer at a higher KYC level (data.kycLevel is the new one): limits may change.
    "kyc.upgrade_approved": "customer.kyc_level_upgraded",
    "customer.suspended": "customer.suspended",
    "customer.reactivated": "customer.reactivated",
    "customer.closed": "customer.closed",
    "customer.email_changed": "customer.email_changed",
    # Published so that a consumer told of a change Keycloak or Sumsub then refused learns it was undone.
    "customer.email_change_reverted": "customer.email_change_reverted",
    # The verified profile stored at approval, and every change Sumsub reports after it (field names only).
    "profile.verified": "customer.profile_updated",
    "kyc.personal_info_changed": "customer.profile_updated",
    # Documents, written by the API (not the workflow) with their audit row.
    "document.uploaded": "customer.document_added",
    "document.archived": "customer.document_archived",
    "document.deleted": "customer.document_deleted",
    # Written by erasure (api/compliance.py), not the workflow: the id, status and the fact remain.
    "customer.erased": "customer.erased",
}
_PROFILE_AUDIT_TYPES = ("profile.verified", "kyc.personal_info_changed")

CUSTOMER_ERASED = "customer.erased"


def unknown_event_types(event_types: Iterable[str]) -> list[str]:
    """The names among `event_types` that are no published type (sorted), for a precise refusal."""
    return sorted(set(event_types) - set(PUBLISHED_TYPES.values()))


def published_type(audit_type: str, details: dict[str, Any] | None = None) -> str | None:
    """The published type of an audit row, or None; a profile row that changed no field publishes nothing."""
    if audit_type in _PROFILE_AUDIT_TYPES and not (details or {}).get("changed_fields"):
        return None
    return PUBLISHED_TYPES.get(audit_type)


def event_data(state: CustomerState, audit_type: str = "", details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data of every published event: where the customer is now, by ids and statuses only; a profile
    event adds the names of the changed fields, a document event the document's id, kind, type and size
    (never its file name, which may name the customer)."""
    details = details or {}
    extra: dict[str, Any] = {}
    if audit_type in _PROFILE_AUDIT_TYPES:
        extra["changedFields"] = sorted(details.get("changed_fields", []))
    elif audit_type.startswith("document."):
        extra["document"] = {
            "id": details["document_id"],
            "kind": details.get("kind"),
            "contentType": details["content_type"],
            "size": details["size"],
            "sha256": details["sha256"],
        }
    return _customer_data(state) | extra


def _customer_data(state: CustomerState) -> dict[str, Any]:
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


def cloud_event_json(
    *, id: str, source: str, type: str, customer_id: str, time: datetime, sequence: int, data: dict[str, Any]
) -> str:
    """The event in CloudEvents 1.0 structured JSON, with our `sequence` extension (per customer, gap-free):
    the body of a webhook and an item of the feed."""
    envelope = CloudEvent(
        attributes={
            "id": id,
            "source": source,
            "type": type,
            "subject": customer_id,
            "time": time,
            "datacontenttype": "application/json",
            "sequence": sequence,
        },
        data=data,
    )
    return _FORMAT.write(envelope).decode()
