"""The domain as data: mappings, transitions and the Sumsub-webhook mapping, without any I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.customer import CUSTOMER_TYPES, AccountCategory, CustomerType, OnboardingStage, VerificationFlow, mask_email
from domain.kyc import KycEventKind
from domain.transitions import IllegalTransition, next_stage
from integrations.sumsub.webhooks import InvalidWebhook, kyc_event_from_webhook, parse_webhook, webhook_dedupe_key
from kit.settings import Settings

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)


def test_every_customer_type_has_its_account_category_and_flow() -> None:
    assert set(CUSTOMER_TYPES) == set(CustomerType)
    assert CUSTOMER_TYPES[CustomerType.FOREIGN_AGENCY_OR_SUBSIDIARY].account_category is AccountCategory.FOREIGN
    assert CUSTOMER_TYPES[CustomerType.BANK].account_category is AccountCategory.INTERBANK
    assert [t for t, p in CUSTOMER_TYPES.items() if p.flow is VerificationFlow.KYC] == [CustomerType.INDIVIDUAL]


def test_stages_refuse_illegal_moves() -> None:
    assert next_stage(OnboardingStage.AWAITING_KYC, OnboardingStage.KYC_IN_REVIEW) is OnboardingStage.KYC_IN_REVIEW
    assert next_stage(OnboardingStage.ONBOARDED, OnboardingStage.ONBOARDED) is OnboardingStage.ONBOARDED
    with pytest.raises(IllegalTransition, match="ONBOARDED to KYC_IN_REVIEW"):
        next_stage(OnboardingStage.ONBOARDED, OnboardingStage.KYC_IN_REVIEW)
    with pytest.raises(IllegalTransition):
        next_stage(OnboardingStage.CLOSED, OnboardingStage.REGISTERED)
    with pytest.raises(IllegalTransition):
        next_stage(OnboardingStage.REGISTERED, OnboardingStage.ONBOARDED)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ({"type": "applicantCreated"}, KycEventKind.CREATED),
        ({"type": "applicantPending"}, KycEventKind.SUBMITTED),
        ({"type": "applicantPrechecked"}, KycEventKind.SUBMITTED),
        ({"type": "applicantOnHold"}, KycEventKind.ON_HOLD),
        ({"type": "applicantReset"}, KycEventKind.RESET),
        ({"type": "applicantLevelChanged"}, KycEventKind.RESET),
        ({"type": "applicantReviewed", "reviewResult": {"reviewAnswer": "GREEN"}}, KycEventKind.APPROVED),
        (
            {"type": "applicantReviewed", "reviewResult": {"reviewAnswer": "RED", "reviewRejectType": "RETRY"}},
            KycEventKind.RESUBMISSION_REQUESTED,
        ),
        (
            {"type": "applicantReviewed", "reviewResult": {"reviewAnswer": "RED", "reviewRejectType": "FINAL"}},
            KycEventKind.DECLINED,
        ),
        ({"type": "applicantPersonalInfoChanged"}, KycEventKind.PERSONAL_INFO_CHANGED),
        ({"type": "applicantActionPending"}, KycEventKind.IGNORED),
        ({"type": "videoIdentStatusChanged"}, KycEventKind.IGNORED),
        ({"type": "somethingSumsubAddsNextYear"}, KycEventKind.IGNORED),
    ],
)
def test_each_sumsub_event_maps_to_one_lifecycle_event(payload: dict, kind: KycEventKind) -> None:
    event = kyc_event_from_webhook({"externalUserId": "c", **payload}, dedupe_key="k", received_at=RECEIVED)
    assert event.kind is kind


def test_created_at_ms_is_a_string_timestamp_and_orders_events() -> None:
    payload = {"type": "applicantPending", "externalUserId": "c", "createdAtMs": "2020-02-21 13:23:19.321"}
    event = kyc_event_from_webhook(payload, dedupe_key="k", received_at=RECEIVED)
    assert event.occurred_at == datetime(2020, 2, 21, 13, 23, 19, 321000, tzinfo=UTC)
    unparseable = kyc_event_from_webhook(
        {**payload, "createdAtMs": 1582291399321}, dedupe_key="k", received_at=RECEIVED
    )
    assert unparseable.occurred_at == RECEIVED


def test_dedupe_key_uses_type_correlation_and_time_else_the_body_digest() -> None:
    payload = {"type": "applicantPending", "correlationId": "req-1", "createdAtMs": "2020-02-21 13:23:19.321"}
    assert webhook_dedupe_key(payload, b"x") == "applicantPending:req-1:2020-02-21 13:23:19.321"
    assert webhook_dedupe_key({"type": "applicantPending"}, b"x") != webhook_dedupe_key(
        {"type": "applicantPending"}, b"y"
    )


@pytest.mark.parametrize(
    "body", [[], "text", {"type": "applicantPending"}, {"externalUserId": "c"}, {"type": 1, "externalUserId": "c"}]
)
def test_webhooks_without_type_or_external_user_id_are_invalid(body: object) -> None:
    with pytest.raises(InvalidWebhook):
        parse_webhook(body)


def test_masked_email_keeps_only_the_first_letter_and_domain() -> None:
    assert mask_email("jane.doe@example.com") == "j***@example.com"


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_the_services_refuse_to_start_with_the_public_dev_secrets() -> None:
    with pytest.raises(SystemExit, match="SUMSUB_WEBHOOK_SECRET"):
        Settings(_env_file=None).refuse_dev_secrets()
    Settings(dev_secrets_allowed=True).refuse_dev_secrets()  # make dev and the tests
    real = {
        "customer_id_secret": "c",
        "keycloak_client_secret": "k",
        "sumsub_app_token": "prd:t",
        "sumsub_secret_key": "s",
        "sumsub_webhook_secret": "w",
        "payload_encryption_keys": "k1:" + "A" * 43 + "=",
        "s3_secret_access_key": "s3",
    }
    Settings(**real).refuse_dev_secrets()
    with pytest.raises(SystemExit, match="PAYLOAD_ENCRYPTION_KEYS"):
        Settings(**{**real, "payload_encryption_keys": Settings().payload_encryption_keys}).refuse_dev_secrets()
