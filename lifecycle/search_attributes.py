"""The custom search attributes ops filter customers by in the Temporal UI and CLI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

from lifecycle.models import CustomerState

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CUSTOMER_TYPE = SearchAttributeKey.for_keyword("CustomerType")
CUSTOMER_STATUS = SearchAttributeKey.for_keyword("CustomerStatus")
KYC_STATUS = SearchAttributeKey.for_keyword("KycStatus")
ONBOARDING_STAGE = SearchAttributeKey.for_keyword("OnboardingStage")

ALL_KEYS = (CUSTOMER_ID, CUSTOMER_TYPE, CUSTOMER_STATUS, KYC_STATUS, ONBOARDING_STAGE)


def search_attribute_updates(state: CustomerState) -> list[SearchAttributeUpdate]:
    """The values that describe this customer now; upserted on every recorded change."""
    return [
        CUSTOMER_ID.value_set(state.customer_id),
        CUSTOMER_TYPE.value_set(state.registration.customer_type.value),
        CUSTOMER_STATUS.value_set(state.status.value),
        KYC_STATUS.value_set(state.kyc_status.value),
        ONBOARDING_STAGE.value_set(state.stage.value),
    ]


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Keyword` flags that register them on `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags
