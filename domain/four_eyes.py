"""Compliance decisions under four eyes (maker-checker): one officer requests, a different one confirms.

    request(kind, customer, reason, by, now)   PENDING until `expires_at` (default 3 days)
      ├── confirm(by another sub, now)         CONFIRMED: the API then carries the decision out
      ├── reject(by any officer, now, why)     REJECTED (the requester may withdraw their own)
      └── (nobody decides in time)             EXPIRED: read as such from `expires_at`, never confirmable

Which customers a kind applies to (`refusal`) is checked when it is requested and again when it is
confirmed, because the customer may have moved in between. Pure: no I/O, no clock (`now` is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from domain.customer import KycStatus, OnboardingStage

DEFAULT_EXPIRY = timedelta(days=3)
MAX_REASON_LENGTH = 500


class RequestKind(StrEnum):
    OVERRIDE_APPROVE = "OVERRIDE_APPROVE"  # approve a customer Sumsub declined, or who expired or must resubmit
    OVERRIDE_DECLINE = "OVERRIDE_DECLINE"  # decline a customer Sumsub approved
    ERASE = "ERASE"  # erase the customer's personal data (crypto-shredding their history)


class RequestState(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class FourEyesError(Exception):
    """A request or decision the four-eyes rule refuses; `field` names the input at fault, if one is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequest(FourEyesError):
    """Bad input: a blank or overlong reason."""


class NotEligible(FourEyesError):
    """The customer's state does not allow this kind of request (now)."""


class SameOfficer(FourEyesError):
    """The officer who requested cannot also confirm: that is the point of four eyes."""


class NotPending(FourEyesError):
    """The request was already decided, or expired."""


ERASABLE_STAGES = frozenset(
    {OnboardingStage.CLOSED, OnboardingStage.KYC_DECLINED, OnboardingStage.EXPIRED, OnboardingStage.FAILED}
)
OVERRIDE_APPROVABLE_STAGES = frozenset(
    {OnboardingStage.KYC_DECLINED, OnboardingStage.EXPIRED, OnboardingStage.KYC_RESUBMISSION_REQUESTED}
)


def refusal(kind: RequestKind, stage: OnboardingStage, kyc_status: KycStatus, *, erased: bool = False) -> str | None:
    """Why a customer in this state cannot get this request, or None when it can."""
    if erased:
        return "the customer was erased"
    if kind is RequestKind.ERASE:
        if stage is OnboardingStage.ONBOARDED:
            return "an active customer cannot be erased: close the customer first (customerClose), then erase"
        if stage not in ERASABLE_STAGES:
            return (
                f"a customer in {stage.value} cannot be erased: only CLOSED, KYC_DECLINED, EXPIRED or FAILED"
                " customers can; close the customer first"
            )
        return None
    if stage is OnboardingStage.CLOSED:
        return "the customer is closed"
    if kind is RequestKind.OVERRIDE_APPROVE:
        if stage in OVERRIDE_APPROVABLE_STAGES or (
            stage is OnboardingStage.ONBOARDED and kyc_status is KycStatus.DECLINED
        ):
            return None  # an onboarded one suspended by a RED review or a declining override is reactivated
        return (
            "only a DECLINED, EXPIRED or RESUBMISSION_REQUESTED customer can be approved"
            f" (stage is {stage.value}, KYC {kyc_status.value})"
        )
    if stage is OnboardingStage.ONBOARDED and kyc_status is KycStatus.APPROVED:
        return None
    return f"only an onboarded, approved customer can be declined (stage is {stage.value}, KYC {kyc_status.value})"


@dataclass(frozen=True)
class FourEyesRequest:
    id: str
    kind: RequestKind
    customer_id: str
    reason: str
    requested_by: str  # the officer's token subject (`sub`): who they are, whatever client they used
    requested_at: datetime
    expires_at: datetime
    state: RequestState = RequestState.PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None

    def state_at(self, now: datetime) -> RequestState:
        """The state as of `now`: a pending request past its expiry is EXPIRED whether or not it was stored so."""
        if self.state is RequestState.PENDING and now >= self.expires_at:
            return RequestState.EXPIRED
        return self.state

    def confirm(self, *, by: str, now: datetime) -> FourEyesRequest:
        self._require_pending(now)
        if by == self.requested_by:
            raise SameOfficer("the officer who requested this cannot confirm it: a second compliance officer must")
        return replace(self, state=RequestState.CONFIRMED, decided_by=by, decided_at=now)

    def reject(self, *, by: str, now: datetime, reason: str) -> FourEyesRequest:
        self._require_pending(now)
        return replace(
            self, state=RequestState.REJECTED, decided_by=by, decided_at=now, decision_reason=_reason(reason)
        )

    def _require_pending(self, now: datetime) -> None:
        state = self.state_at(now)
        if state is not RequestState.PENDING:
            raise NotPending(f"the request is {state.value}, no longer pending")


def new_request(
    kind: RequestKind,
    *,
    request_id: str,
    customer_id: str,
    reason: str,
    by: str,
    now: datetime,
    expires_after: timedelta = DEFAULT_EXPIRY,
) -> FourEyesRequest:
    """A PENDING request; the caller checks `refusal` for the customer's current state first."""
    return FourEyesRequest(
        id=request_id,
        kind=kind,
        customer_id=customer_id,
        reason=_reason(reason),
        requested_by=by,
        requested_at=now,
        expires_at=now + expires_after,
    )


def _reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise InvalidRequest("a reason is required", field="reason")
    if len(text) > MAX_REASON_LENGTH:
        raise InvalidRequest(f"the reason is over {MAX_REASON_LENGTH} characters", field="reason")
    return text
