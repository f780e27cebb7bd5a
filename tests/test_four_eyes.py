"""The four-eyes rule as tables, without I/O: who may confirm, when a request expires, which customers qualify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.customer import KycStatus, OnboardingStage
from domain.four_eyes import (
    DEFAULT_EXPIRY,
    InvalidRequest,
    NotPending,
    RequestKind,
    RequestState,
    SameOfficer,
    new_request,
    refusal,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MAKER, CHECKER = "sub-maker", "sub-checker"


def test_a_request_is_pending_for_three_days_by_default_then_expired() -> None:
    request = new_request(RequestKind.ERASE, request_id="r1", customer_id="c1", reason=" asked ", by=MAKER, now=NOW)
    assert (request.state, request.reason, request.expires_at) == (RequestState.PENDING, "asked", NOW + DEFAULT_EXPIRY)
    assert DEFAULT_EXPIRY == timedelta(days=3)
    assert request.state_at(NOW + DEFAULT_EXPIRY - timedelta(seconds=1)) is RequestState.PENDING
    assert request.state_at(NOW + DEFAULT_EXPIRY) is RequestState.EXPIRED
    with pytest.raises(NotPending, match="EXPIRED"):
        request.confirm(by=CHECKER, now=NOW + DEFAULT_EXPIRY)
    shorter = new_request(
        RequestKind.ERASE,
        request_id="r2",
        customer_id="c1",
        reason="x",
        by=MAKER,
        now=NOW,
        expires_after=timedelta(hours=1),
    )
    assert shorter.state_at(NOW + timedelta(hours=1)) is RequestState.EXPIRED


def test_the_same_officer_cannot_confirm_a_different_one_can_once() -> None:
    request = new_request(
        RequestKind.OVERRIDE_APPROVE, request_id="r1", customer_id="c1", reason="ok", by=MAKER, now=NOW
    )
    with pytest.raises(SameOfficer):
        request.confirm(by=MAKER, now=NOW)
    later = NOW + timedelta(hours=2)
    confirmed = request.confirm(by=CHECKER, now=later)
    assert (confirmed.state, confirmed.decided_by, confirmed.decided_at) == (RequestState.CONFIRMED, CHECKER, later)
    assert (confirmed.requested_by, confirmed.requested_at) == (MAKER, NOW)  # both officers, both times
    assert confirmed.state_at(later + DEFAULT_EXPIRY) is RequestState.CONFIRMED  # a decision never expires
    for again in (
        lambda: confirmed.confirm(by="third", now=later),
        lambda: confirmed.reject(by="third", now=later, reason="no"),
    ):
        with pytest.raises(NotPending, match="CONFIRMED"):
            again()


def test_any_officer_may_reject_with_a_reason_the_requester_too() -> None:
    request = new_request(RequestKind.ERASE, request_id="r1", customer_id="c1", reason="asked", by=MAKER, now=NOW)
    withdrawn = request.reject(by=MAKER, now=NOW, reason=" wrong customer ")
    assert (withdrawn.state, withdrawn.decided_by, withdrawn.decision_reason) == (
        RequestState.REJECTED,
        MAKER,
        "wrong customer",
    )
    with pytest.raises(InvalidRequest) as blank:
        request.reject(by=CHECKER, now=NOW, reason="  ")
    assert blank.value.field == "reason"


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_a_reason_is_required_and_bounded(reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        new_request(RequestKind.ERASE, request_id="r1", customer_id="c1", reason=reason, by=MAKER, now=NOW)
    assert refused.value.field == "reason"


S, K = OnboardingStage, KycStatus


@pytest.mark.parametrize(
    ("kind", "stage", "kyc", "allowed"),
    [
        (RequestKind.ERASE, S.CLOSED, K.APPROVED, True),
        (RequestKind.ERASE, S.KYC_DECLINED, K.DECLINED, True),
        (RequestKind.ERASE, S.EXPIRED, K.NOT_STARTED, True),
        (RequestKind.ERASE, S.FAILED, K.NOT_STARTED, True),
        (RequestKind.ERASE, S.ONBOARDED, K.APPROVED, False),
        (RequestKind.ERASE, S.AWAITING_KYC, K.NOT_STARTED, False),
        (RequestKind.OVERRIDE_APPROVE, S.KYC_DECLINED, K.DECLINED, True),
        (RequestKind.OVERRIDE_APPROVE, S.EXPIRED, K.PENDING, True),
        (RequestKind.OVERRIDE_APPROVE, S.KYC_RESUBMISSION_REQUESTED, K.RESUBMISSION_REQUESTED, True),
        (RequestKind.OVERRIDE_APPROVE, S.ONBOARDED, K.APPROVED, False),
        (RequestKind.OVERRIDE_APPROVE, S.CLOSED, K.DECLINED, False),
        (RequestKind.OVERRIDE_APPROVE, S.ONBOARDED, K.DECLINED, True),  # suspended by a RED review or an override
        (RequestKind.OVERRIDE_APPROVE, S.AWAITING_KYC, K.STARTED, False),
        (RequestKind.OVERRIDE_DECLINE, S.ONBOARDED, K.APPROVED, True),
        (RequestKind.OVERRIDE_DECLINE, S.KYC_DECLINED, K.DECLINED, False),
        (RequestKind.OVERRIDE_DECLINE, S.CLOSED, K.APPROVED, False),
        (RequestKind.OVERRIDE_DECLINE, S.KYC_APPROVED, K.APPROVED, False),  # not activated yet
    ],
)
def test_which_customers_each_kind_applies_to(kind: RequestKind, stage: S, kyc: K, allowed: bool) -> None:
    assert (refusal(kind, stage, kyc) is None) is allowed


def test_an_active_customer_is_told_to_close_first_and_an_erased_one_cannot_be_asked_again() -> None:
    assert "close the customer first" in (refusal(RequestKind.ERASE, S.ONBOARDED, K.APPROVED) or "")
    assert refusal(RequestKind.ERASE, S.CLOSED, K.APPROVED, erased=True) == "the customer was erased"
