"""What ops see of a customer in the Temporal UI and CLI: the search attributes they filter by, and the
workflow's current details."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from domain.customer import CustomerStatus, KycStatus, OnboardingStage
from domain.state import CustomerState, Registration
from domain.transitions import WAITING_FOR_KYC_STAGES

_DEV_SERVER_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
}

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CUSTOMER_TYPE = SearchAttributeKey.for_keyword("CustomerType")
CUSTOMER_STATUS = SearchAttributeKey.for_keyword("CustomerStatus")
KYC_STATUS = SearchAttributeKey.for_keyword("KycStatus")
ONBOARDING_STAGE = SearchAttributeKey.for_keyword("OnboardingStage")
# Since when the customer has been waiting for a KYC verdict (unset once the wait is over).
KYC_WAITING_SINCE = SearchAttributeKey.for_datetime("KycWaitingSince")

ALL_KEYS: tuple[SearchAttributeKey[Any], ...] = (
    CUSTOMER_ID,
    CUSTOMER_TYPE,
    CUSTOMER_STATUS,
    KYC_STATUS,
    ONBOARDING_STAGE,
    KYC_WAITING_SINCE,
)


def search_attribute_updates(state: CustomerState) -> list[SearchAttributeUpdate[Any]]:
    """The values that describe this customer now; upserted on every recorded change."""
    waiting = state.stage in WAITING_FOR_KYC_STAGES and state.kyc_started_at is not None
    return [
        CUSTOMER_ID.value_set(state.customer_id),
        CUSTOMER_TYPE.value_set(state.registration.customer_type.value),
        CUSTOMER_STATUS.value_set(state.status.value),
        KYC_STATUS.value_set(state.kyc_status.value),
        ONBOARDING_STAGE.value_set(state.stage.value),
        KYC_WAITING_SINCE.value_set(state.kyc_started_at)
        if waiting and state.kyc_started_at
        else KYC_WAITING_SINCE.value_unset(),
    ]


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Keyword` flags that register them on `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={_DEV_SERVER_TYPES[key.indexed_value_type]}"]
    return flags


def initial_search_attributes(registration: Registration) -> TypedSearchAttributes:
    """Set when the workflow starts, so a new customer is findable before its first recorded change."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(CUSTOMER_ID, registration.customer_id),
            SearchAttributePair(CUSTOMER_TYPE, registration.customer_type.value),
            SearchAttributePair(CUSTOMER_STATUS, CustomerStatus.INACTIVE.value),
            SearchAttributePair(KYC_STATUS, KycStatus.NOT_STARTED.value),
            SearchAttributePair(ONBOARDING_STAGE, OnboardingStage.REGISTERED.value),
        ]
    )


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def details_markdown(state: CustomerState) -> str:
    """What ops read in the Temporal UI: where the customer is and what the workflow waits for."""
    lines = [
        f"**Stage:** {state.stage.value} · **Status:** {state.status.value} · **KYC:** {state.kyc_status.value}",
    ]
    if state.stage in WAITING_FOR_KYC_STAGES:
        lines.append(
            f"Waiting for Sumsub's review · next reminder {_when(state.next_reminder_at)} · "
            f"next status poll {_when(state.next_poll_at)} · expires {_when(state.expires_at)}"
        )
    if state.suspension_reason:
        lines.append(f"**Suspended:** {state.suspension_reason}")
    if state.last_error:
        lines.append(f"**Last error:** {state.last_error}")
    return "\n\n".join(lines)
