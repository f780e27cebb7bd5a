"""What compliance officers can do: four-eyes requests (KYC overrides, erasure), their confirmation or rejection,
and the data subject's export."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.compliance import Officer
from api.errors import BadUserInput
from api.schema.permissions import ComplianceOnly, Context
from api.service import parse_customer_id
from db.four_eyes import StoredRequest
from domain.four_eyes import RequestKind, RequestState

strawberry.enum(RequestKind, name="ComplianceRequestKind")
strawberry.enum(RequestState, name="ComplianceRequestState")


@strawberry.type(description="A decision one compliance officer requested and a different one must confirm.")
class ComplianceRequest:
    id: strawberry.ID
    kind: RequestKind
    customer_id: strawberry.ID
    state: RequestState = strawberry.field(description="EXPIRED once `expiresAt` passed while still pending.")
    reason: str
    requested_by: str = strawberry.field(description="The requesting officer's subject (token `sub`).")
    requested_by_actor: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_by_actor: str | None
    decided_at: datetime | None
    decision_reason: str | None
    executed_at: datetime | None = strawberry.field(description="When the confirmed decision was carried out.")

    @classmethod
    def from_stored(cls, stored: StoredRequest, now: datetime) -> ComplianceRequest:
        request = stored.request
        return cls(
            id=strawberry.ID(request.id),
            kind=request.kind,
            customer_id=strawberry.ID(request.customer_id),
            state=request.state_at(now),
            reason=request.reason,
            requested_by=request.requested_by,
            requested_by_actor=stored.requested_by_actor,
            requested_at=request.requested_at,
            expires_at=request.expires_at,
            decided_by=request.decided_by,
            decided_by_actor=stored.decided_by_actor,
            decided_at=request.decided_at,
            decision_reason=request.decision_reason,
            executed_at=stored.executed_at,
        )


@strawberry.type
class CustomerDataExportPayload:
    exported_at: datetime
    document: JSON = strawberry.field(
        description="Everything held about the customer: registration, profile, statuses, audit trail, documents "
        "with fresh download links, Sumsub webhooks received, compliance requests, the Keycloak user."
    )


@strawberry.input
class CustomerDataExportInput:
    customer_id: strawberry.ID


@strawberry.enum
class KycOverrideDecision(Enum):
    APPROVE = "APPROVE"
    DECLINE = "DECLINE"


@strawberry.input
class CustomerKycOverrideInput:
    customer_id: strawberry.ID
    decision: KycOverrideDecision
    reason: str


@strawberry.input
class CustomerEraseInput:
    customer_id: strawberry.ID
    reason: str


@strawberry.input
class ComplianceRequestConfirmInput:
    request_id: strawberry.ID


@strawberry.input
class ComplianceRequestRejectInput:
    request_id: strawberry.ID
    reason: str


def _request_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadUserInput("a compliance request id is a UUID", field="requestId") from None


def _now() -> datetime:
    return datetime.now(UTC)


def _officer(info: Info[Context, Any]) -> Officer:
    principal = info.context.principal
    return Officer(subject=principal.subject, actor=principal.actor)


@strawberry.type
class ComplianceMutation:
    @strawberry.mutation(
        permission_classes=[ComplianceOnly],
        description="The data subject's export: one JSON document (audited as customer.data_exported).",
    )
    async def customer_data_export(
        self, info: Info[Context, Any], input: CustomerDataExportInput
    ) -> CustomerDataExportPayload:
        customer_id = parse_customer_id(input.customer_id, field="customerId")
        document = await info.context.services.export.export(customer_id, actor=info.context.principal.actor)
        return CustomerDataExportPayload(
            exported_at=datetime.fromisoformat(document["exportedAt"]), document=JSON(document)
        )

    @strawberry.mutation(
        permission_classes=[ComplianceOnly],
        description="Requests a KYC override: APPROVE a KYC_DECLINED, EXPIRED or KYC_RESUBMISSION_REQUESTED customer "
        "(or one suspended by a RED review), DECLINE an onboarded approved one; a different officer confirms it.",
    )
    async def customer_kyc_override(
        self, info: Info[Context, Any], input: CustomerKycOverrideInput
    ) -> ComplianceRequest:
        customer_id = parse_customer_id(input.customer_id, field="customerId")
        kind = (
            RequestKind.OVERRIDE_APPROVE
            if input.decision is KycOverrideDecision.APPROVE
            else RequestKind.OVERRIDE_DECLINE
        )
        stored = await info.context.services.compliance.request(
            kind, customer_id=customer_id, reason=input.reason, by=_officer(info)
        )
        return ComplianceRequest.from_stored(stored, _now())

    @strawberry.mutation(
        permission_classes=[ComplianceOnly],
        description="Requests the erasure of a CLOSED, KYC_DECLINED, EXPIRED or FAILED customer (an active one must "
        "be closed first); a different compliance officer confirms it (complianceRequestConfirm).",
    )
    async def customer_erase(self, info: Info[Context, Any], input: CustomerEraseInput) -> ComplianceRequest:
        customer_id = parse_customer_id(input.customer_id, field="customerId")
        stored = await info.context.services.compliance.request(
            RequestKind.ERASE, customer_id=customer_id, reason=input.reason, by=_officer(info)
        )
        return ComplianceRequest.from_stored(stored, _now())

    @strawberry.mutation(
        permission_classes=[ComplianceOnly],
        description="Confirms a pending request (not by the officer who requested it) and carries it out; a confirmed "
        "erasure that was interrupted (SERVICE_UNAVAILABLE) resumes when confirmed again.",
    )
    async def compliance_request_confirm(
        self, info: Info[Context, Any], input: ComplianceRequestConfirmInput
    ) -> ComplianceRequest:
        stored = await info.context.services.compliance.confirm(_request_id(input.request_id), by=_officer(info))
        return ComplianceRequest.from_stored(stored, _now())

    @strawberry.mutation(
        permission_classes=[ComplianceOnly],
        description="Rejects a pending request, with a reason (any compliance officer, the requester too).",
    )
    async def compliance_request_reject(
        self, info: Info[Context, Any], input: ComplianceRequestRejectInput
    ) -> ComplianceRequest:
        stored = await info.context.services.compliance.reject(
            _request_id(input.request_id), reason=input.reason, by=_officer(info)
        )
        return ComplianceRequest.from_stored(stored, _now())


@strawberry.type
class ComplianceQuery:
    @strawberry.field(permission_classes=[ComplianceOnly], description="One compliance request; null when none.")
    async def compliance_request(self, info: Info[Context, Any], id: strawberry.ID) -> ComplianceRequest | None:
        stored = await info.context.services.compliance.get(_request_id(id))
        return None if stored is None else ComplianceRequest.from_stored(stored, _now())

    @strawberry.field(
        permission_classes=[ComplianceOnly], description="A customer's compliance requests, newest first."
    )
    async def compliance_requests(
        self, info: Info[Context, Any], customer_id: strawberry.ID
    ) -> list[ComplianceRequest]:
        rows = await info.context.services.compliance.for_customer(parse_customer_id(customer_id, field="customerId"))
        now = _now()
        return [ComplianceRequest.from_stored(stored, now) for stored in rows]
