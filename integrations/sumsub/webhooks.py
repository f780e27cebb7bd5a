"""Sumsub webhooks: their authenticity (`X-Payload-Digest`), the fields we route on, the dedupe key, and
the one mapping from a webhook to a lifecycle KYC event."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.kyc import KycEvent, KycEventKind

DEFAULT_WEBHOOK_DIGEST_ALG = "HMAC_SHA256_HEX"
WEBHOOK_DIGEST_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "HMAC_SHA1_HEX": hashlib.sha1,
    "HMAC_SHA256_HEX": hashlib.sha256,
    "HMAC_SHA512_HEX": hashlib.sha512,
}


class InvalidWebhook(ValueError):
    """An authentic webhook whose body we cannot act on (not JSON, or missing type/externalUserId)."""


_CREATED_AT_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# How far after its receipt an event's own time may lie (clocks drift; Sumsub retries within seconds).
DEFAULT_EVENT_TIME_TOLERANCE = timedelta(minutes=5)


def kind_of_review(review_answer: str | None, reject_type: str | None) -> KycEventKind:
    """A completed review's verdict: GREEN approves; RED + RETRY asks again; any other RED declines."""
    if review_answer == "GREEN":
        return KycEventKind.APPROVED
    if review_answer == "RED":
        return KycEventKind.RESUBMISSION_REQUESTED if reject_type == "RETRY" else KycEventKind.DECLINED
    return KycEventKind.IGNORED


def _kind_of(payload: dict[str, Any]) -> KycEventKind:
    event_type = payload["type"]
    if event_type == "applicantCreated":
        return KycEventKind.CREATED
    if event_type in ("applicantPending", "applicantPrechecked"):
        return KycEventKind.SUBMITTED
    if event_type == "applicantOnHold":
        return KycEventKind.ON_HOLD
    if event_type in ("applicantReset", "applicantLevelChanged"):
        return KycEventKind.RESET
    if event_type == "applicantPersonalInfoChanged":
        return KycEventKind.PERSONAL_INFO_CHANGED
    if event_type == "applicantReviewed":
        result = _review_result(payload)
        return kind_of_review(result.get("reviewAnswer"), result.get("reviewRejectType"))
    return KycEventKind.IGNORED


def _occurred_at(raw: object, received_at: datetime) -> datetime:
    """Sumsub sends `createdAtMs` as a UTC string despite its name; fall back to our receipt time."""
    if isinstance(raw, str):
        try:
            return datetime.strptime(raw, _CREATED_AT_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
    return received_at


def webhook_dedupe_key(payload: dict[str, Any], raw_body: bytes) -> str:
    """type + correlationId + createdAtMs identifies a delivery; the body digest when those are absent."""
    correlation_id, created_at = payload.get("correlationId"), payload.get("createdAtMs")
    if correlation_id and created_at:
        return f"{payload['type']}:{correlation_id}:{created_at}"
    return "sha256:" + hashlib.sha256(raw_body).hexdigest()


def parse_webhook(payload: object) -> dict[str, Any]:
    """Checks the fields we route on; everything else in the body is optional."""
    if not isinstance(payload, dict):
        raise InvalidWebhook("body must be a JSON object")
    for field in ("type", "externalUserId"):
        if not isinstance(payload.get(field), str) or not payload[field]:
            raise InvalidWebhook(f"missing or invalid field: {field}")
    return payload


def _review_result(payload: dict[str, Any]) -> dict[str, Any]:
    result = payload.get("reviewResult")
    return result if isinstance(result, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def kyc_event_from_webhook(
    payload: dict[str, Any],
    *,
    dedupe_key: str,
    received_at: datetime,
    time_tolerance: timedelta = DEFAULT_EVENT_TIME_TOLERANCE,
) -> KycEvent:
    """Total over any JSON object that passed `parse_webhook`: fields of the wrong type count as absent.

    Events are ordered by Sumsub's `createdAtMs`, but one stamped more than `time_tolerance` after we
    received it (a clock gone wrong, or a forged date) is ordered by its receipt time instead: otherwise
    every later, real verdict would be "older than the newest event applied" and ignored."""
    stamped = _occurred_at(payload.get("createdAtMs"), received_at)
    bounded = stamped > received_at + time_tolerance
    return KycEvent(
        kind=_kind_of(payload),
        sumsub_type=payload["type"],
        applicant_id=_text(payload.get("applicantId")),
        occurred_at=received_at if bounded else stamped,
        dedupe_key=dedupe_key,
        moderation_comment=_text(_review_result(payload).get("moderationComment")),
        reject_labels=_texts(_review_result(payload).get("rejectLabels")),
        level_name=_text(payload.get("levelName")),
        previous_level_name=_text(payload.get("previousLevelName")),
        stamped_at=stamped if bounded else None,
    )


# --- authenticity ----------------------------------------------------------------------------------


def webhook_digest(body: bytes, secret: str, alg: str = DEFAULT_WEBHOOK_DIGEST_ALG) -> str:
    """`X-Payload-Digest` for `body`: hex HMAC with the webhook's own secret (not the app secret)."""
    return hmac.new(secret.encode(), body, WEBHOOK_DIGEST_ALGORITHMS[alg]).hexdigest()


def verify_webhook_digest(body: bytes, *, digest: str | None, alg: str | None, secret: str) -> bool:
    """True when `digest` authenticates the raw `body`; a missing `alg` means Sumsub's default, SHA-256."""
    alg = alg or DEFAULT_WEBHOOK_DIGEST_ALG
    if not digest or alg not in WEBHOOK_DIGEST_ALGORITHMS:
        return False
    return hmac.compare_digest(webhook_digest(body, secret, alg).encode(), digest.strip().lower().encode())
