"""The rest of the lifecycle through the real stack: declines, ops actions over GraphQL, the audit trail,
webhooks for unknown customers, and a worker killed mid-onboarding."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import asyncpg
import httpx

from dev.stack import DevStack
from integrations.sumsub.webhooks import webhook_digest
from tests.support.emulators import keycloak_users
from tests.support.graphql import (
    CUSTOMER_FIELDS,
    finish_onboarding,
    get_customer,
    graphql,
    onboard,
    press,
    register,
    wait_for_stage,
)


async def sumsub_deliveries(stack: DevStack) -> list[dict[str, Any]]:
    """Every webhook delivery attempt the Sumsub emulator made."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stack.sumsub_url}/_emulator/deliveries")
    response.raise_for_status()
    return list(response.json())


SUSPEND = f"mutation($id: ID!, $r: String!) {{ customerSuspend(input: {{customerId: $id, reason: $r}}) {{ customer {{ {CUSTOMER_FIELDS} suspensionReason }} }} }}"
REACTIVATE = (
    f"mutation($id: ID!) {{ customerReactivate(input: {{customerId: $id}}) {{ customer {{ {CUSTOMER_FIELDS} }} }} }}"
)
CLOSE = f"mutation($id: ID!, $r: String!) {{ customerClose(input: {{customerId: $id, reason: $r}}) {{ customer {{ {CUSTOMER_FIELDS} }} }} }}"
EVENTS = "query($id: ID!) { customer(id: $id) { events { type occurredAt actor details } } }"


async def test_ops_suspend_reactivate_and_close_with_illegal_moves_refused(
    ops: httpx.AsyncClient, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    customer = await onboard(portal, "ops-path@example.com", "PRIVATE_COMPANY")
    cid = customer["id"]

    refused = await graphql(ops, REACTIVATE, {"id": cid})
    assert refused["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert "status is ACTIVE" in refused["errors"][0]["message"]
    forbidden = await graphql(portal, SUSPEND, {"id": cid, "r": "x"})
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    blank = await graphql(ops, SUSPEND, {"id": cid, "r": "  "})
    assert blank["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "reason"}

    suspended = (await graphql(ops, SUSPEND, {"id": cid, "r": "fraud check"}))["data"]["customerSuspend"]["customer"]
    assert (suspended["status"], suspended["suspensionReason"]) == ("SUSPENDED", "fraud check")
    assert suspended["depositAccount"]["status"] == "FROZEN"
    active = (await graphql(ops, REACTIVATE, {"id": cid}))["data"]["customerReactivate"]["customer"]
    assert active["status"] == "ACTIVE" and active["depositAccount"]["status"] == "ACTIVE"
    closed = (await graphql(ops, CLOSE, {"id": cid, "r": "customer request"}))["data"]["customerClose"]["customer"]
    assert (closed["status"], closed["onboarding"]["stage"], closed["depositAccount"]["status"]) == (
        "INACTIVE",
        "CLOSED",
        "CLOSED",
    )

    for query, variables in (
        (SUSPEND, {"id": cid, "r": "again"}),
        (REACTIVATE, {"id": cid}),
        (CLOSE, {"id": cid, "r": "x"}),
    ):
        body = await graphql(ops, query, variables)
        assert body["errors"][0]["extensions"]["code"] == "CONFLICT", body
    # The closed customer is still readable (from PostgreSQL once the workflow has completed).
    after = await get_customer(ops, cid)
    assert after is not None and after["onboarding"]["stage"] == "CLOSED"
    assert await database.fetchval("SELECT status FROM deposit_accounts WHERE customer_id = $1", cid) == "CLOSED"

    events = (await graphql(ops, EVENTS, {"id": cid}))["data"]["customer"]["events"]
    ops_events = [e for e in events if e["type"].startswith("customer.")]
    assert [e["type"] for e in ops_events] == [
        "customer.closed",
        "customer.reactivated",
        "customer.suspended",
        "customer.activated",
        "customer.registered",
    ]
    assert ops_events[0]["actor"] == "ops" and ops_events[0]["details"] == {"reason": "customer request"}
    assert events == sorted(events, key=lambda e: e["occurredAt"], reverse=True)


async def test_unknown_customer_is_not_found_for_ops_actions(ops: httpx.AsyncClient) -> None:
    body = await graphql(ops, SUSPEND, {"id": str(uuid.uuid4()), "r": "x"})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_final_rejection_declines_and_disables_the_keycloak_user(
    portal: httpx.AsyncClient, stack: DevStack
) -> None:
    customer = await register(portal, "declined@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(portal, customer["id"], "AWAITING_KYC")
    await press(waiting["kyc"]["verificationUrl"], "submit")
    await wait_for_stage(portal, customer["id"], "KYC_IN_REVIEW")
    await press(waiting["kyc"]["verificationUrl"], "resubmit")
    retry = await wait_for_stage(portal, customer["id"], "KYC_RESUBMISSION_REQUESTED")
    assert retry["kyc"]["moderationComment"]
    await press(waiting["kyc"]["verificationUrl"], "reject")
    declined = await wait_for_stage(portal, customer["id"], "KYC_DECLINED")
    assert (declined["status"], declined["kyc"]["status"], declined["depositAccount"]) == ("INACTIVE", "DECLINED", None)


async def test_webhooks_for_unknown_customers_are_acknowledged_and_kept_for_ops(
    stack: DevStack, database: asyncpg.Pool
) -> None:
    stranger = str(uuid.uuid4())
    body = json.dumps(
        {
            "type": "applicantReviewed",
            "externalUserId": stranger,
            "applicantId": "a" * 24,
            "correlationId": f"req-{stranger}",
            "createdAtMs": "2026-01-01 00:00:00.000",
            "reviewResult": {"reviewAnswer": "GREEN"},
        }
    ).encode()
    headers = {
        "X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret"),
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        first = await http.post("/webhooks/sumsub", content=body, headers=headers)
        again = await http.post("/webhooks/sumsub", content=body, headers=headers)
        broken = b'{"type": "applicantPending"}'
        invalid = await http.post(
            "/webhooks/sumsub",
            content=broken,
            headers={"X-Payload-Digest": webhook_digest(broken, "dev-sumsub-webhook-secret")},
        )
    assert (first.status_code, again.status_code, invalid.status_code) == (200, 200, 400)
    assert again.json() == {"ok": True, "duplicate": True}
    deadline = time.monotonic() + 10
    while True:
        outcome = await database.fetchval(
            "SELECT outcome FROM sumsub_webhook_inbox WHERE external_user_id = $1", stranger
        )
        if outcome is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert outcome == "no_running_workflow"
    assert (
        await database.fetchval("SELECT count(*) FROM sumsub_webhook_inbox WHERE external_user_id = $1", stranger) == 1
    )
    assert (
        await database.fetchval(
            "SELECT count(*) FROM sumsub_webhook_inbox WHERE outcome LIKE 'rejected:%' AND payload->>'raw' = $1",
            broken.decode(),
        )
        == 1
    )


async def test_killing_the_worker_mid_onboarding_loses_nothing_and_duplicates_nothing(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    """SIGKILLs the worker repeatedly while customers are being provisioned and activated."""
    rng = random.Random(7)
    started = time.monotonic()
    kills = 0
    customers = [await register(portal, f"crash-{i}@example.com", "INDIVIDUAL") for i in range(8)]

    async def chaos(stop: asyncio.Event) -> None:
        # A kill lands in the middle of whatever is running: a workflow task or an activity. The worker
        # gets a moment after each restart to make progress (it needs ~1.5 s to start).
        nonlocal kills
        while not stop.is_set() and kills < 4:
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            stack.kill("worker")
            kills += 1
            stack.restart("worker")

    stop = asyncio.Event()
    monkey = asyncio.create_task(chaos(stop))
    try:
        done = await asyncio.gather(*(finish_onboarding(portal, c["id"], timeout=120) for c in customers))
    finally:
        stop.set()
        await monkey
    print(f"crash test: {kills} worker SIGKILLs, {time.monotonic() - started:.1f}s for {len(customers)} customers")
    assert kills >= 3
    ids = [c["id"] for c in done]
    assert all(c["status"] == "ACTIVE" for c in done)
    assert await database.fetchval(
        "SELECT count(*) FROM deposit_accounts WHERE customer_id = ANY($1::uuid[])", ids
    ) == len(ids)
    for customer in done:  # exactly one Keycloak user and one Sumsub applicant each
        assert len(await keycloak_users(stack, customer["id"])) == 1
    created = [d for d in await sumsub_deliveries(stack) if d["type"] == "applicantCreated" and d["attempt"] == 0]
    applicants_per_customer = {c["kyc"]["applicantId"] for c in done}
    assert len(applicants_per_customer) == len(done)
    assert len({d["applicantId"] for d in created} & applicants_per_customer) == len(done)


EMAIL_UPDATE = f"mutation($id: ID!, $e: String!) {{ customerEmailUpdate(input: {{customerId: $id, email: $e}}) {{ customer {{ {CUSTOMER_FIELDS} }} }} }}"


async def test_an_email_change_reaches_keycloak_and_sumsub_and_a_taken_email_is_refused(
    stack: DevStack, ops: httpx.AsyncClient, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    first = await onboard(portal, "before-change@example.com", "INDIVIDUAL")
    other = await register(portal, "someone-else@example.com", "INDIVIDUAL")
    await wait_for_stage(portal, other["id"], "AWAITING_KYC")

    changed = await graphql(ops, EMAIL_UPDATE, {"id": first["id"], "e": "After.Change@Example.com"})
    assert changed["data"]["customerEmailUpdate"]["customer"]["email"] == "after.change@example.com", changed
    assert (
        await database.fetchval("SELECT email FROM customers WHERE id = $1", first["id"]) == "after.change@example.com"
    )
    users = await keycloak_users(stack, first["id"])
    assert [(u["username"], u["email"]) for u in users] == [("after.change@example.com", "after.change@example.com")]
    # Registering the new address finds the same customer; the old one is free again, for someone new
    # (its derived id belongs to the first customer, who must not be handed out).
    again = await register(portal, "after.change@example.com", "INDIVIDUAL")
    assert again["id"] == first["id"]
    newcomer = await register(portal, "before-change@example.com", "PRIVATE_COMPANY")
    assert newcomer["id"] != first["id"] and newcomer["email"] == "before-change@example.com"
    assert newcomer["customerType"] == "PRIVATE_COMPANY" and newcomer["status"] == "INACTIVE"
    assert (await register(portal, "Before-Change@example.com", "PRIVATE_COMPANY"))["id"] == newcomer["id"]

    taken = await graphql(ops, EMAIL_UPDATE, {"id": first["id"], "e": "someone-else@example.com"})
    assert taken["errors"][0]["extensions"]["code"] == "CONFLICT", taken
    assert (
        await database.fetchval("SELECT email FROM customers WHERE id = $1", first["id"]) == "after.change@example.com"
    )
    invalid = await graphql(ops, EMAIL_UPDATE, {"id": first["id"], "e": "not an email"})
    assert invalid["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "email"}


UNDELIVERABLE = "{ undeliverableWebhooks { id eventType externalUserId outcome attempts } }"
REPLAY = "mutation($id: ID!) { webhookReplay(input: {id: $id}) { id outcome attempts } }"


async def test_ops_list_undeliverable_webhooks_and_replay_one(
    stack: DevStack, ops: httpx.AsyncClient, portal: httpx.AsyncClient
) -> None:
    stranger = str(uuid.uuid4())
    body = json.dumps(
        {
            "type": "applicantPending",
            "externalUserId": stranger,
            "correlationId": f"req-{stranger}",
            "createdAtMs": "2026-01-01 00:00:00.000",
        }
    ).encode()
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (
            await http.post(
                "/webhooks/sumsub",
                content=body,
                headers={"X-Payload-Digest": webhook_digest(body, "dev-sumsub-webhook-secret")},
            )
        ).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        listed = (await graphql(ops, UNDELIVERABLE, {}))["data"]["undeliverableWebhooks"]
        mine = [w for w in listed if w["externalUserId"] == stranger]
        if mine or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(mine) == 1 and mine[0]["outcome"] == "no_running_workflow" and mine[0]["eventType"] == "applicantPending"
    replayed = (await graphql(ops, REPLAY, {"id": mine[0]["id"]}))["data"]["webhookReplay"]
    assert replayed["attempts"] == mine[0]["attempts"] + 1 and replayed["outcome"] == "no_running_workflow"
    assert (await graphql(portal, UNDELIVERABLE, {}))["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await graphql(ops, REPLAY, {"id": "999999999"}))["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def _set_latency(base_url: str, seconds: float) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(f"{base_url}/_emulator/latency", json={"seconds": seconds})).raise_for_status()


async def test_a_worker_killed_in_the_middle_of_each_provisioning_call_creates_each_thing_once(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    """The emulators answer slowly, so the worker is SIGKILLed while each call is in flight (the
    emulator still completes it): the retry must find and reuse what the dead attempt created."""
    steps = ["create Keycloak user", "create Sumsub applicant", "create KYC link"]
    query = "query($id: ID!) { customer(id: $id) { onboarding { stage currentStep } } }"
    await _set_latency(stack.keycloak_url, 1.5)
    await _set_latency(stack.sumsub_url, 1.5)
    started = time.monotonic()
    try:
        customer = await register(portal, "killed-mid-call@example.com", "BANK")
        for step in steps:
            deadline = time.monotonic() + 60
            while True:
                body = await graphql(portal, query, {"id": customer["id"]})
                if body["data"]["customer"]["onboarding"]["currentStep"] == step:
                    break
                assert time.monotonic() < deadline, f"never saw {step}: {body}"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the request is now with the emulator
            stack.kill("worker")
            stack.restart("worker")
    finally:
        await _set_latency(stack.keycloak_url, 0)
        await _set_latency(stack.sumsub_url, 0)
    done = await finish_onboarding(portal, customer["id"], timeout=120)
    print(f"kill-per-step test: {len(steps)} SIGKILLs mid-call, {time.monotonic() - started:.1f}s")
    assert done["status"] == "ACTIVE"
    deliveries = await sumsub_deliveries(stack)
    assert len(await keycloak_users(stack, customer["id"])) == 1
    created = {d["applicantId"] for d in deliveries if d["type"] == "applicantCreated"}
    assert done["kyc"]["applicantId"] in created
    assert (
        sum(
            1
            for d in deliveries
            if d["type"] == "applicantCreated" and d["attempt"] == 0 and d["applicantId"] == done["kyc"]["applicantId"]
        )
        == 1
    )
    assert await database.fetchval("SELECT count(*) FROM deposit_accounts WHERE customer_id = $1", customer["id"]) == 1
