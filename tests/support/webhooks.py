"""Signed Sumsub webhooks as the tests send them: a storm's bodies and one delivery to an API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from integrations.sumsub.webhooks import webhook_digest

DEV_WEBHOOK_SECRET = "dev-sumsub-webhook-secret"
# Per customer, oldest first: the newest (a GREEN review) decides where the customer ends.
STORM_SCRIPT = [
    ("applicantPending", None),
    ("applicantOnHold", None),
    ("applicantReviewed", {"reviewAnswer": "RED", "reviewRejectType": "RETRY", "moderationComment": "blurry"}),
    ("applicantPending", None),
    ("applicantReviewed", {"reviewAnswer": "GREEN"}),
]


def storm_bodies(run: str, waiting: list[dict[str, Any]]) -> list[bytes]:
    """STORM_SCRIPT for each customer (as `customer(id)` answers while it awaits KYC), stamped a second apart."""
    bodies: list[bytes] = []
    stamped = datetime.now(UTC) - timedelta(seconds=len(STORM_SCRIPT))
    for customer in waiting:
        for step, (event_type, review) in enumerate(STORM_SCRIPT):
            payload = {
                "applicantId": customer["kyc"]["applicantId"],
                "inspectionId": "i" * 24,
                "correlationId": f"req-storm-{run}-{customer['id']}-{step}",
                "externalUserId": customer["id"],
                "levelName": "basic-kyc-level",
                "type": event_type,
                "reviewStatus": "completed" if review else "pending",
                # Sumsub's own order, a second apart, all before receipt (a later stamp would be bounded).
                "createdAtMs": (stamped + timedelta(seconds=step)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                "sandboxMode": True,
                **({"reviewResult": review} if review else {}),
            }
            bodies.append(json.dumps(payload).encode())
    return bodies


async def post_webhook(http: httpx.AsyncClient, body: bytes) -> int:
    """Delivers one body to `POST /webhooks/sumsub`, signed as Sumsub signs; returns the status code."""
    response = await http.post(
        "/webhooks/sumsub",
        content=body,
        headers={
            "X-Payload-Digest": webhook_digest(body, DEV_WEBHOOK_SECRET, "HMAC_SHA512_HEX"),
            "X-Payload-Digest-Alg": "HMAC_SHA512_HEX",
            "Content-Type": "application/json",
        },
    )
    return response.status_code
