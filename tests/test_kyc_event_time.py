"""One correctly signed Sumsub verdict dated far in the future must not freeze a customer's KYC.

Through the real stack: the webhook endpoint, the inbox, the relay (which bounds the event's time to
its receipt) and the workflow. Both directions: a RED "from 2099" after activation is applied, then a
real GREEN still lifts the suspension; a GREEN "from 2099" activates, then a real RED still suspends.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from dev.stack import DevStack
from integrations.sumsub.webhooks import webhook_digest
from tests.support.graphql import finish_onboarding, get_customer, register, wait_for_stage

FUTURE = "2099-01-01 00:00:00.000"


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


async def send_review(
    stack: DevStack, customer: dict[str, Any], answer: str, created_at: str, reject: str | None = None
) -> None:
    result = {"reviewAnswer": answer, **({"reviewRejectType": reject} if reject else {})}
    body = json.dumps(
        {
            "applicantId": customer["kyc"]["applicantId"],
            "externalUserId": customer["id"],
            "type": "applicantReviewed",
            "reviewStatus": "completed",
            "reviewResult": result,
            "correlationId": f"req-{uuid.uuid4().hex}",
            "createdAtMs": created_at,
        }
    ).encode()
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        response = await http.post(
            "/webhooks/sumsub",
            content=body,
            headers={
                "X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret"),
                "Content-Type": "application/json",
            },
        )
    assert response.status_code == 200, response.text


async def wait_for_status(
    portal: httpx.AsyncClient, customer_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        customer = await get_customer(portal, customer_id)
        assert customer is not None
        if customer["status"] == status:
            return customer
        assert time.monotonic() < deadline, f"customer is {customer['status']}, not {status}"
        await asyncio.sleep(0.2)


async def test_a_red_dated_2099_after_activation_does_not_lock_out_a_real_green(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    customer = await finish_onboarding(
        portal, (await register(portal, f"future-red-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL"))["id"]
    )
    await send_review(stack, customer, "RED", FUTURE, "FINAL")
    suspended = await wait_for_status(portal, customer["id"], "SUSPENDED")
    assert suspended["kyc"]["status"] == "DECLINED"
    # The kyc.declined row is written after the suspension the status shows (customer.suspended comes first).
    deadline = time.monotonic() + 30
    while (
        bounded := await database.fetchval(
            "SELECT details->>'ordered_by_receipt' FROM customer_events"
            " WHERE customer_id = $1 AND event_type = 'kyc.declined'",
            customer["id"],
        )
    ) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert bounded is not None and "2099-01-01" in bounded, (
        "the audit trail does not say the event was ordered by receipt"
    )

    await send_review(stack, customer, "GREEN", now_stamp())
    active = await wait_for_status(portal, customer["id"], "ACTIVE")
    assert active["kyc"]["status"] == "APPROVED"


async def test_a_green_dated_2099_does_not_shield_the_customer_from_a_real_red(
    stack: DevStack, portal: httpx.AsyncClient
) -> None:
    registered = await register(portal, f"future-green-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(portal, registered["id"], "AWAITING_KYC")
    await send_review(stack, waiting, "GREEN", FUTURE)
    await wait_for_stage(portal, registered["id"], "ONBOARDED")

    await send_review(stack, waiting, "RED", now_stamp(), "FINAL")
    suspended = await wait_for_status(portal, registered["id"], "SUSPENDED")
    assert suspended["kyc"]["status"] == "DECLINED"
