"""Expected refusals are routine: a precise error for the caller, an info line without personal data or a
traceback in the log. And a returning former customer gets a precise answer, not their closed record.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx

from dev.stack import DevStack
from tests.support.graphql import graphql, register, wait_for_stage

REGISTER = "mutation($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id status } } }"
CLOSE = 'mutation($id: ID!) { customerClose(input: {customerId: $id, reason: "customer request"}) { customer { id } } }'


def api_log(stack: DevStack) -> str:
    assert stack.log_dir is not None
    return (stack.log_dir / "api.log").read_text(errors="replace")


async def test_refused_requests_are_logged_at_info_without_the_request_or_personal_data(
    stack: DevStack, portal: httpx.AsyncClient
) -> None:
    marker = uuid.uuid4().hex[:10]
    dotless, handle = f"jane.{marker}@localhost", f"tg_refused_{marker}"
    # The request id is bound to every line of the request: our marker finds this test's lines.
    headers = {"X-Request-Id": f"refusals-{marker}"}
    bad_email = await portal.post(
        "/graphql",
        json={
            "query": REGISTER,
            "variables": {"input": {"email": dotless, "customerType": "INDIVIDUAL", "telegramHandle": handle}},
        },
        headers=headers,
    )
    assert bad_email.json()["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "email"}
    not_a_query = await portal.post("/graphql", json={"query": f"{{ nope_{marker} }}"}, headers=headers)
    assert not_a_query.json()["errors"]

    def lines_of_this_test() -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in api_log(stack).splitlines() if line.startswith("{")]
        return [line for line in parsed if line.get("request_id") == f"refusals-{marker}"]

    deadline = time.monotonic() + 10
    while len(refused := [line for line in lines_of_this_test() if line.get("event") == "graphql request refused"]) < 2:
        assert time.monotonic() < deadline, lines_of_this_test()
        await asyncio.sleep(0.1)
    assert len(refused) == 2, refused
    assert {line["level"] for line in refused} == {"info"}
    assert [line.get("code") for line in refused] == ["BAD_USER_INPUT", None]
    text = api_log(stack)
    for secret in (dotless, f"jane.{marker}", handle, f"nope_{marker}"):
        assert secret not in text, f"{secret!r} is in the API's log"
    assert not [line for line in lines_of_this_test() if line.get("level") == "error" or "exception" in line]


async def test_a_returning_former_customer_gets_a_precise_conflict_and_nothing_is_started(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient
) -> None:
    email = f"returning.{uuid.uuid4().hex[:10]}@example.com"
    first = await register(portal, email, "INDIVIDUAL")
    await wait_for_stage(portal, first["id"], "AWAITING_KYC")
    closed = await graphql(ops, CLOSE, {"id": first["id"]})
    assert "errors" not in closed, closed

    again = await graphql(portal, REGISTER, {"input": {"email": email.upper(), "customerType": "INDIVIDUAL"}})
    assert again.get("data") is None
    assert again["errors"][0]["extensions"] == {"code": "CONFLICT", "field": "email"}
    assert "closed" in again["errors"][0]["message"]
    # The refusal is the whole answer: no unhandled start-operation failure behind it.
    assert "Future exception was never retrieved" not in api_log(stack)
    assert "WorkflowAlreadyStartedError" not in api_log(stack)
