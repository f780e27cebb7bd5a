"""The portal's and ops' side of the API in the tests: GraphQL calls, and what a customer does on the
Sumsub emulator's WebSDK page (press a button)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

CUSTOMER_FIELDS = """
  id email customerType status telegramHandle
  kyc { status level applicantId verificationUrl moderationComment }
  onboarding { stage workflowId runId lastError }
  depositAccount { id status category }
"""
REGISTER = f"""
mutation Register($input: CustomerRegisterInput!) {{
  customerRegister(input: $input) {{ customer {{ {CUSTOMER_FIELDS} }} }}
}}"""
GET_CUSTOMER = f"query Get($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_FIELDS} }} }}"


async def graphql(http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


async def register(
    http: httpx.AsyncClient, email: str, customer_type: str, telegram: str | None = None
) -> dict[str, Any]:
    body = await graphql(
        http, REGISTER, {"input": {"email": email, "customerType": customer_type, "telegramHandle": telegram}}
    )
    assert "errors" not in body, body
    return body["data"]["customerRegister"]["customer"]


async def get_customer(http: httpx.AsyncClient, customer_id: str) -> dict[str, Any] | None:
    body = await graphql(http, GET_CUSTOMER, {"id": customer_id})
    assert "errors" not in body, body
    return body["data"]["customer"]


async def wait_for_stage(
    http: httpx.AsyncClient, customer_id: str, stage: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        customer = await get_customer(http, customer_id)
        if customer is not None and customer["onboarding"]["stage"] == stage:
            return customer
        if time.monotonic() > deadline:
            raise AssertionError(f"customer {customer_id} never reached {stage}; last seen {customer}")
        await asyncio.sleep(0.1)


async def press(verification_url: str, action: str) -> None:
    """What a person does on the emulator's WebSDK page: press a button."""
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{verification_url}/{action}")
        assert response.status_code == 303, response.text


async def fill_in(verification_url: str, data: dict[str, str | list[str]]) -> None:
    """What a person types into the WebSDK page's data form, then "Save data" (or "Edit data")."""
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{verification_url}/data", data=data)
        assert response.status_code == 303, response.text


async def onboard(http: httpx.AsyncClient, email: str, customer_type: str) -> dict[str, Any]:
    return await finish_onboarding(http, (await register(http, email, customer_type))["id"])


async def finish_onboarding(http: httpx.AsyncClient, customer_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """What the customer and the compliance officer do on the WebSDK page: submit, then approve."""
    waiting = await wait_for_stage(http, customer_id, "AWAITING_KYC", timeout)
    await press(waiting["kyc"]["verificationUrl"], "submit")
    await wait_for_stage(http, customer_id, "KYC_IN_REVIEW", timeout)
    await press(waiting["kyc"]["verificationUrl"], "approve")
    return await wait_for_stage(http, customer_id, "ONBOARDED", timeout)
