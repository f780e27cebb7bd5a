"""Every published event type has a JSON Schema, and what the service emits is what the schema says."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from db.events import LifecycleEvent
from domain.customer import AccountCategory, CustomerStatus, CustomerType, DepositAccountStatus, OnboardingStage
from domain.events import PUBLISHED_TYPES, event_data
from domain.state import CustomerState, DepositAccount, Registration
from tests.support.event_schemas import schema_types, validator

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def envelope(event_type: str, state: CustomerState) -> dict[str, Any]:
    from api.events_feed import cloud_event

    row = LifecycleEvent(str(uuid.uuid4()), state.customer_id, 4, event_type, NOW, event_data(state), (1, 1))
    return cloud_event(row, "urn:customer-lifecycle")


def customer(**fields: Any) -> CustomerState:
    reg = Registration(customer_id=str(uuid.uuid4()), email="jane@example.com", customer_type=CustomerType.BANK)
    return CustomerState(registration=reg, created_at=NOW, updated_at=NOW, **fields)


def test_every_published_type_has_a_valid_schema() -> None:
    assert schema_types() == set(PUBLISHED_TYPES.values())
    for event_type in schema_types() | {"lifecycle-event"}:
        Draft202012Validator.check_schema(validator(event_type).schema)


def test_what_is_emitted_matches_its_schema_and_holds_no_personal_data() -> None:
    active = customer(
        status=CustomerStatus.ACTIVE,
        stage=OnboardingStage.ONBOARDED,
        deposit_account=DepositAccount(
            id=str(uuid.uuid4()), category=AccountCategory.INTERBANK, status=DepositAccountStatus.ACTIVE, created_at=NOW
        ),
    )
    validator("customer.activated").validate(envelope("customer.activated", active))
    validator("customer.registered").validate(envelope("customer.registered", customer()))
    # Every published type passes the common schema too (its `type` enum names them all).
    for event_type in sorted(PUBLISHED_TYPES.values()):
        validator("lifecycle-event").validate(envelope(event_type, customer()))
    assert "jane" not in str(envelope("customer.registered", customer()))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda e: e["data"].update(email="jane@example.com"), "personal data is no field of an event"),
        (lambda e: e.update(sequence=0), "sequences start at 1"),
        (lambda e: e.pop("id"), "the id is the consumer's dedupe key"),
        (lambda e: e.update(type="customer.closed"), "the type is the schema's"),
    ],
)
def test_the_schemas_refuse_what_consumers_must_not_see(change: Any, why: str) -> None:
    event = envelope("customer.registered", customer())
    change(event)
    assert not validator("customer.registered").is_valid(event), why


def test_an_activation_without_its_account_does_not_match() -> None:
    assert not validator("customer.activated").is_valid(envelope("customer.activated", customer()))
