"""Compliance through the real stack: four-eyes erasure by two officers (and its refusals), and what an erasure
leaves behind in PostgreSQL, Keycloak, the object store, the logs and Temporal's history (crypto-shredded)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import obstore
import obstore.exceptions
import pytest
import pytest_asyncio
from google.protobuf import json_format
from temporalio.client import Client

import db.customers
import db.pool
from api.compliance import ERASED, ComplianceService, Officer, _tombstone
from api.documents import object_store
from api.errors import Conflict, Unavailable
from api.service import CustomerService
from db.data_keys import DataKeyStore
from dev.emulators.sumsub import create_app
from dev.stack import DevStack
from domain.customer import CustomerType, KycLevel, KycUpgradeStatus
from domain.four_eyes import RequestKind, RequestState
from domain.state import CustomerState, KycUpgrade, Registration
from integrations.keycloak import keycloak_admin
from integrations.sumsub.client import SumsubClient
from kit.settings import Settings
from kit.temporal import connect
from tests.helpers import free_port, running_app
from tests.support.emulators import (
    COMPLIANCE_CALLBACK,
    COMPLIANCE_CONSOLE,
    DEV_OFFICERS,
    browser_token,
    client_token,
    service_account_client,
)
from tests.support.event_schemas import validator
from tests.support.graphql import fill_in, graphql, press, register, wait_for_stage
from tests.test_documents import PDF, upload

ERASE = """mutation($id: ID!, $r: String!) { customerErase(input: {customerId: $id, reason: $r}) {
  id kind state requestedBy requestedByActor requestedAt expiresAt } }"""
CONFIRM = """mutation($id: ID!) { complianceRequestConfirm(input: {requestId: $id}) {
  id state decidedBy decidedByActor decidedAt executedAt } }"""
REJECT = """mutation($id: ID!, $r: String!) { complianceRequestReject(input: {requestId: $id, reason: $r}) {
  id state decidedBy decisionReason } }"""
CLOSE = 'mutation($id: ID!) { customerClose(input: {customerId: $id, reason: "customer request"}) { customer { id } } }'
CUSTOMER = "query($id: ID!) { customer(id: $id) { id email status erasedAt onboarding { stage workflowId } } }"
REQUESTS = "query($id: ID!) { complianceRequests(customerId: $id) { id state } }"
EXPORT = "mutation($id: ID!) { customerDataExport(input: {customerId: $id}) { exportedAt document } }"


@pytest_asyncio.fixture(scope="module")
async def maker(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with service_account_client(stack, "compliance", "compliance-dev-secret") as http:
        yield http


@pytest_asyncio.fixture(scope="module")
async def checker(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with service_account_client(stack, "compliance-checker", "compliance-checker-dev-secret") as http:
        yield http


def _code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


async def _onboarded_person(ops: httpx.AsyncClient, tag: str) -> tuple[dict[str, Any], dict[str, str]]:
    """An INDIVIDUAL with provided names, a verified profile (names, date of birth, address) and a document."""
    person = {
        "email": f"erase-{tag}@example.com",
        "firstName": f"Erasefirst{tag}",
        "lastName": f"Eraselast{tag}",
        # A date no other test's customer has (the second customer here gets another one).
        "dob": f"19{int(tag[:2], 16) % 60 + 30}-{int(tag[2], 16) % 12 + 1:02d}-{int(tag[3], 16) % 28 + 1:02d}",
        "address.street": f"{tag} Erasure Street",
    }
    body = await graphql(
        ops,
        "mutation($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id } } }",
        {
            "input": {
                "email": person["email"],
                "customerType": "INDIVIDUAL",
                "firstName": person["firstName"],
                "lastName": person["lastName"],
                "telegramHandle": f"er_{tag}",
            }
        },
    )
    customer_id = body["data"]["customerRegister"]["customer"]["id"]
    waiting = await wait_for_stage(ops, customer_id, "AWAITING_KYC")
    url = waiting["kyc"]["verificationUrl"]
    await fill_in(url, {k: v for k, v in person.items() if k != "email"})
    await press(url, "submit")
    await wait_for_stage(ops, customer_id, "KYC_IN_REVIEW")
    await press(url, "approve")
    customer = await wait_for_stage(ops, customer_id, "ONBOARDED")
    # The kind is free text: what ops typed may name the person.
    kind = f"contract of {person['firstName']} {person['lastName']}"
    uploaded = await upload(ops, customer_id, PDF, f"contract-{person['lastName']}.pdf", "application/pdf", kind)
    assert "errors" not in uploaded.json(), uploaded.text
    return customer, person


async def _tables_holding(database: asyncpg.Pool, needles: list[str]) -> dict[str, list[str]]:
    """Every table of the database, each row as text, searched for each needle (case-insensitive)."""
    tables = await database.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    found: dict[str, list[str]] = {}
    for (table,) in tables:
        for needle in needles:
            hits = await database.fetchval(
                f'SELECT count(*) FROM "{table}" t WHERE position(lower($1) IN lower(t::text)) > 0', needle
            )
            if hits:
                found.setdefault(table, []).append(needle)
    return found


async def _decode(stack: DevStack, payloads: Any) -> httpx.Response:
    token = await client_token(stack, "ops", "ops-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        return await http.post(
            "/codec/decode",
            json=json_format.MessageToDict(payloads),
            headers={"Authorization": f"Bearer {token}", "X-Namespace": "default"},
        )


async def test_an_erasure_requested_and_confirmed_by_two_officers_leaves_no_personal_value(
    stack: DevStack,
    ops: httpx.AsyncClient,
    maker: httpx.AsyncClient,
    checker: httpx.AsyncClient,
    database: asyncpg.Pool,
    keycloak_admin: Any,
) -> None:
    tag = uuid.uuid4().hex[:8]
    customer, person = await _onboarded_person(ops, tag)
    kept, other_person = await _onboarded_person(ops, uuid.uuid4().hex[:8])  # another customer, untouched
    cid = customer["id"]
    keycloak_user = (await keycloak_admin.a_get_users({"email": person["email"], "exact": True}))[0]["id"]

    # Refusals first, each changing nothing: ops lack the role; an active customer must be closed first.
    assert _code(await graphql(ops, ERASE, {"id": cid, "r": "asked"})) == "FORBIDDEN"
    active = await graphql(maker, ERASE, {"id": cid, "r": "customer asked (GDPR art. 17)"})
    assert _code(active) == "CONFLICT" and "close the customer first" in active["errors"][0]["message"]
    assert _code(await graphql(maker, ERASE, {"id": cid, "r": "  "})) == "BAD_USER_INPUT"
    assert _code(await graphql(maker, ERASE, {"id": "nope", "r": "x"})) == "BAD_USER_INPUT"
    assert (await graphql(maker, REQUESTS, {"id": cid}))["data"]["complianceRequests"] == []

    assert "errors" not in await graphql(ops, CLOSE, {"id": cid})
    # A first request, rejected: its reason and the rejection's may name the person (as may the erasure's own).
    withdrawn = (await graphql(maker, ERASE, {"id": cid, "r": f"{person['firstName']} asked by phone"}))["data"]
    rejection = await graphql(
        checker, REJECT, {"id": withdrawn["customerErase"]["id"], "r": f"{person['lastName']} must ask in writing"}
    )
    assert rejection["data"]["complianceRequestReject"]["state"] == "REJECTED", rejection
    reason = f"customer {person['lastName']} asked in writing (GDPR art. 17)"
    requested = (await graphql(maker, ERASE, {"id": cid, "r": reason}))["data"]["customerErase"]
    assert (requested["kind"], requested["state"], requested["requestedByActor"]) == ("ERASE", "PENDING", "compliance")
    again = await graphql(maker, ERASE, {"id": cid, "r": "twice"})
    assert _code(again) == "CONFLICT" and "pending" in again["errors"][0]["message"]
    # Four eyes: the requester cannot confirm, ops cannot either; nothing is erased by trying.
    same = await graphql(maker, CONFIRM, {"id": requested["id"]})
    assert _code(same) == "CONFLICT" and "second compliance officer" in same["errors"][0]["message"]
    assert _code(await graphql(ops, CONFIRM, {"id": requested["id"]})) == "FORBIDDEN"
    assert (await graphql(ops, CUSTOMER, {"id": cid}))["data"]["customer"]["erasedAt"] is None

    needles = [person["email"], person["email"].split("@")[0], person["firstName"], person["lastName"]]
    needles += [person["dob"], person["address.street"], f"er_{tag}"]
    # The search below finds what is there: before the erasure, the personal values are in these tables.
    before = await _tables_holding(database, needles)
    tables = {"customers", "customer_profiles", "customer_documents", "customer_events", "four_eyes_requests"}
    assert tables <= set(before), before
    assert (
        await database.fetchval(  # the document's kind alone holds the names (its filename is tombstoned too)
            "SELECT kind FROM customer_documents WHERE customer_id = $1", cid
        )
        == f"contract of {person['firstName']} {person['lastName']}"
    )

    confirmed = (await graphql(checker, CONFIRM, {"id": requested["id"]}))["data"]["complianceRequestConfirm"]
    assert confirmed["state"] == "CONFIRMED" and confirmed["executedAt"] is not None
    assert confirmed["decidedByActor"] == "compliance-checker" and confirmed["decidedBy"] != requested["requestedBy"]

    # What remains: the id, the status, the fact of erasure.
    after = (await graphql(ops, CUSTOMER, {"id": cid}))["data"]["customer"]
    assert after["erasedAt"] is not None and after["onboarding"]["stage"] == "CLOSED"
    assert person["email"] not in after["email"]

    # PostgreSQL: no table holds the email (or its local part), the names, the date of birth, the street.
    if other_person["dob"] == person["dob"]:
        needles.remove(person["dob"])  # one chance in ~20,000: the kept customer's date is rightly still there
    assert await _tables_holding(database, needles) == {}
    trail = await database.fetch(
        "SELECT event_type, actor, occurred_at, details FROM customer_events WHERE customer_id = $1 ORDER BY id", cid
    )
    types = [row["event_type"] for row in trail]
    assert {"customer.registered", "kyc.approved", "document.uploaded", "customer.closed"} <= set(types)
    assert types[-1] == "customer.erased" and all(row["actor"] and row["occurred_at"] for row in trail)
    erased = json.loads(trail[-1]["details"]) if isinstance(trail[-1]["details"], str) else trail[-1]["details"]
    assert erased["requested_by"] == requested["requestedBy"] and erased["decided_by"] == confirmed["decidedBy"]
    assert erased["requested_at"] and erased["decided_at"] and erased["reason"] == "[erased]"
    assert erased["sumsub_deletion"] == "to be requested from Sumsub by the bank" and erased["payload_key_shredded"]

    # Keycloak: the user is gone. Sumsub: the applicant is deactivated (deleting it is the bank's request).
    assert await keycloak_admin.a_get_users({"email": person["email"], "exact": True}) == []
    with pytest.raises(Exception, match="404"):
        await keycloak_admin.a_get_user(keycloak_user)
    applicant_id = await database.fetchval("SELECT sumsub_applicant_id FROM customers WHERE id = $1", cid)
    assert applicant_id is not None and erased["sumsub_applicant_deactivated"] == applicant_id
    async with asyncio.timeout(30):  # Sumsub says so with its applicantDeactivated webhook
        while not await database.fetchval(
            "SELECT 1 FROM sumsub_webhook_inbox WHERE applicant_id = $1 AND event_type = 'applicantDeactivated'",
            applicant_id,
        ):
            await asyncio.sleep(0.1)
    await _late_webhooks_are_settled_and_block_no_one(ops, database, cid, applicant_id, kept["id"], person)
    # Everything that came after the erasure (those webhooks) left no personal value either.
    assert await _tables_holding(database, needles) == {}
    settings = stack.settings()
    # The object store: nothing left under the customer, and no object anywhere holds the email.
    store = object_store(settings)
    assert [meta async for batch in obstore.list(store, f"customers/{cid}/") for meta in batch] == []
    for batch in [b async for b in obstore.list(store)]:
        for meta in batch:
            content = bytes(await (await obstore.get_async(store, meta["path"])).bytes_async())
            assert person["email"].encode() not in content and person["lastName"].encode() not in content

    # Temporal: the history is still there, and no payload of it decodes any more; the other customer's do.
    raw = await Client.connect(stack.temporal_address)
    history = await raw.get_workflow_handle(after["onboarding"]["workflowId"]).fetch_history()
    refused = await _decode(stack, history.events[0].workflow_execution_started_event_attributes.input)
    assert refused.status_code == 422 and "shredded" in refused.text
    other = await raw.get_workflow_handle(kept["onboarding"]["workflowId"]).fetch_history()
    assert (await _decode(stack, other.events[0].workflow_execution_started_event_attributes.input)).status_code == 200

    # The event feed says it, valid against its schema.
    events_token = await client_token(stack, "events-reader", "events-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {events_token}"}) as feed:
        published: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = (
                await feed.get("/events", params={"types": "customer.erased", **({"after": cursor} if cursor else {})})
            ).json()
            published += page["events"]
            if not page["events"]:
                break
            cursor = page["next"]
    (event,) = [e for e in published if e["subject"] == cid]
    validator("customer.erased").validate(event)

    # What an export now holds: the facts, no personal value.
    left = (await graphql(maker, EXPORT, {"id": cid}))["data"]["customerDataExport"]["document"]
    assert left["customer"]["erased_at"] and left["keycloakUser"] is None and left["profile"]["verified"] is None
    assert [needle for needle in needles if needle.lower() in json.dumps(left).lower()] == []

    # The logs of every process: no personal value either.
    assert stack.log_dir is not None
    for log in stack.log_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        for needle in needles:
            assert needle not in text, f"{needle!r} in {log.name}"

    # Erasure is once: a second request is refused.
    assert "erased" in (await graphql(maker, ERASE, {"id": cid, "r": "again"}))["errors"][0]["message"]

    # A document for the erased customer: refused, nothing stored.
    late = (await upload(ops, cid, PDF, "late.pdf", "application/pdf")).json()
    assert _code(late) == "CONFLICT" and "erased" in late["errors"][0]["message"], late
    assert (
        await database.fetchval(
            "SELECT count(*) FROM customer_documents WHERE customer_id = $1 AND status <> 'DELETED'", cid
        )
        == 0
    )
    assert [meta async for batch in obstore.list(store, f"customers/{cid}/") for meta in batch] == []

    # The person registering again: a clear CONFLICT on the email (a compliance decision), nothing started.
    again = await graphql(
        ops,
        "mutation($e: String!) { customerRegister(input: {email: $e, customerType: INDIVIDUAL}) { customer { id } } }",
        {"e": person["email"]},
    )
    assert _code(again) == "CONFLICT" and "erased" in again["errors"][0]["message"], again
    assert again["errors"][0]["extensions"].get("field") == "email"
    assert await database.fetchval("SELECT count(*) FROM customers WHERE email = $1", person["email"]) == 0


REPLAY = "mutation($id: ID!) { webhookReplay(input: {id: $id}) { id outcome } }"


async def _late_webhooks_are_settled_and_block_no_one(
    ops: httpx.AsyncClient,
    database: asyncpg.Pool,
    cid: str,
    applicant_id: str,
    other_id: str,
    person: dict[str, str],
) -> None:
    """Sumsub's applicantDeactivated (sent for the erasure itself, maybe after its commit) and any later webhook for
    the erased customer are settled as `customer_erased` with a tombstoned body; a webhook of another customer
    stored after them is still delivered by the sweep (rows written here, with no notice: only a sweep takes them)."""
    stored: list[int] = []
    for customer_id, comment in ((cid, f"late note about {person['lastName']}"), (other_id, "routine")):
        payload = {
            "type": "applicantPending",
            "externalUserId": customer_id,
            "applicantId": applicant_id if customer_id == cid else None,
            "createdAtMs": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.000"),
            "reviewResult": {"moderationComment": comment},
        }
        stored.append(
            await database.fetchval(
                """
                INSERT INTO sumsub_webhook_inbox (dedupe_key, event_type, external_user_id, applicant_id, payload)
                VALUES ($1, 'applicantPending', $2, $3, $4::jsonb) RETURNING id
                """,
                f"test-late-{uuid.uuid4()}",
                customer_id,
                payload["applicantId"],
                json.dumps(payload),
            )
        )
    late, other = stored
    async with asyncio.timeout(60):  # the stack's sweeps run every few seconds
        while True:
            rows = await database.fetch(
                "SELECT id, outcome, payload::text AS payload FROM sumsub_webhook_inbox"
                " WHERE (external_user_id = $1 OR applicant_id = $2 OR id = $3) AND delivered_at IS NOT NULL",
                cid,
                applicant_id,
                other,
            )
            settled = {row["id"]: row for row in rows}
            deactivated = await database.fetchval(
                "SELECT count(*) FROM sumsub_webhook_inbox WHERE applicant_id = $1 AND event_type = 'applicantDeactivated'"
                " AND delivered_at IS NULL",
                applicant_id,
            )
            if late in settled and other in settled and deactivated == 0:
                break
            await asyncio.sleep(0.2)
    assert settled[other]["outcome"] == "delivered"
    assert settled[late]["outcome"] == "customer_erased"
    assert json.loads(settled[late]["payload"]) == {"type": "applicantPending", "erased": True}
    for row in rows:
        if row["id"] != other:
            assert set(json.loads(row["payload"])) == {"type", "erased"}, row
    # Ops replaying the tombstone: a clear refusal, not a server error.
    refused = await graphql(ops, REPLAY, {"id": str(late)})
    assert _code(refused) == "CONFLICT" and "erased" in refused["errors"][0]["message"]


async def test_a_declined_customer_is_erased_without_closing_first_and_a_rejection_erases_nothing(
    stack: DevStack, ops: httpx.AsyncClient, maker: httpx.AsyncClient, checker: httpx.AsyncClient
) -> None:
    customer = await register(ops, f"declined-erase-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(ops, customer["id"], "AWAITING_KYC")
    await press(waiting["kyc"]["verificationUrl"], "submit")
    await wait_for_stage(ops, customer["id"], "KYC_IN_REVIEW")
    await press(waiting["kyc"]["verificationUrl"], "reject")
    await wait_for_stage(ops, customer["id"], "KYC_DECLINED")

    first = (await graphql(maker, ERASE, {"id": customer["id"], "r": "asked"}))["data"]["customerErase"]
    rejected = (await graphql(checker, REJECT, {"id": first["id"], "r": "wrong customer"}))["data"]
    assert rejected["complianceRequestReject"]["state"] == "REJECTED"
    late = await graphql(checker, CONFIRM, {"id": first["id"]})
    assert _code(late) == "CONFLICT" and "REJECTED" in late["errors"][0]["message"]
    assert (await graphql(ops, CUSTOMER, {"id": customer["id"]}))["data"]["customer"]["erasedAt"] is None

    second = (await graphql(checker, ERASE, {"id": customer["id"], "r": "asked, checked"}))["data"]["customerErase"]
    done = (await graphql(maker, CONFIRM, {"id": second["id"]}))["data"]["complianceRequestConfirm"]
    assert done["executedAt"] is not None
    after = (await graphql(ops, CUSTOMER, {"id": customer["id"]}))["data"]["customer"]
    assert after["erasedAt"] is not None and after["onboarding"]["stage"] == "CLOSED"  # the erasure closed it


@asynccontextmanager
async def _service(
    stack: DevStack,
    data_keys: DataKeyStore,
    *,
    clock: Callable[[], datetime] | None = None,
    keycloak_url: str | None = None,
    sumsub_url: str | None = None,
) -> AsyncIterator[ComplianceService]:
    """The API's compliance service on the stack (its database, Temporal, Sumsub, bucket), with a clock of the
    test's or a Keycloak URL nothing answers at."""
    settings: Settings = stack.settings()
    assert settings.database_url is not None
    database = await db.pool.create_pool(settings.database_url, size=2)  # with the API's JSON codec
    temporal = await connect(settings, data_keys=data_keys)
    admin = keycloak_admin(settings.model_copy(update={"keycloak_url": keycloak_url or settings.keycloak_url}))
    try:
        sumsub_settings = settings.model_copy(update={"sumsub_base_url": sumsub_url or settings.sumsub_base_url})
        async with SumsubClient.from_settings(sumsub_settings) as sumsub:
            yield ComplianceService(
                pool=database,
                customers=CustomerService(pool=database, temporal=temporal, settings=settings),
                temporal=temporal,
                keycloak=admin,
                sumsub=sumsub,
                store=object_store(settings),
                data_keys=data_keys,
                request_expiry=settings.four_eyes_request_expiry,
                **({"clock": clock} if clock else {}),
            )
    finally:
        await admin.connection.aclose()
        await admin.connection.keycloak_openid.connection.aclose()
        await database.close()


MAKER = Officer(subject="maker-sub", actor="compliance")
CHECKER = Officer(subject="checker-sub", actor="compliance-checker")


async def _closed_customer(ops: httpx.AsyncClient, prefix: str) -> str:
    customer = await register(ops, f"{prefix}-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    await wait_for_stage(ops, customer["id"], "AWAITING_KYC")  # its Keycloak user and applicant exist
    assert "errors" not in await graphql(ops, CLOSE, {"id": customer["id"]})
    return str(customer["id"])


async def test_a_request_nobody_confirmed_in_time_expires(
    stack: DevStack, ops: httpx.AsyncClient, data_keys: DataKeyStore
) -> None:
    """The service with its clock moved past the expiry (FOUR_EYES_REQUEST_EXPIRY), on the stack's database."""
    customer_id = await _closed_customer(ops, "expiry")
    now = [datetime.now(UTC)]
    expiry = stack.settings().four_eyes_request_expiry
    async with _service(stack, data_keys, clock=lambda: now[0]) as service:
        stored = await service.request(RequestKind.ERASE, customer_id=customer_id, reason="asked", by=MAKER)
        now[0] += expiry + timedelta(seconds=1)
        with pytest.raises(Conflict, match="EXPIRED"):
            await service.confirm(stored.request.id, by=CHECKER)
        # An expired request no longer blocks a new one.
        renewed = await service.request(RequestKind.ERASE, customer_id=customer_id, reason="again", by=MAKER)
        assert renewed.request.id != stored.request.id


async def test_an_erasure_cut_short_by_a_keycloak_outage_is_unavailable_and_resumes_when_confirmed_again(
    stack: DevStack, ops: httpx.AsyncClient, data_keys: DataKeyStore, database: asyncpg.Pool
) -> None:
    customer_id = await _closed_customer(ops, "outage")
    async with _service(stack, data_keys, keycloak_url=f"http://127.0.0.1:{free_port()}") as keycloak_down:
        stored = await keycloak_down.request(RequestKind.ERASE, customer_id=customer_id, reason="asked", by=MAKER)
        with pytest.raises(Unavailable, match="Keycloak"):
            await keycloak_down.confirm(stored.request.id, by=CHECKER)
        interrupted = await keycloak_down.get(stored.request.id)
    assert interrupted is not None
    assert interrupted.request.state is RequestState.CONFIRMED and interrupted.executed_at is None
    # Nothing of the PostgreSQL part happened: the customer is whole, the key intact.
    assert (await graphql(ops, CUSTOMER, {"id": customer_id}))["data"]["customer"]["erasedAt"] is None
    assert await database.fetchval(
        "SELECT wrapped_key IS NOT NULL FROM customer_data_keys WHERE customer_id = $1", customer_id
    )

    async with _service(stack, data_keys) as service:
        resumed = await service.confirm(stored.request.id, by=MAKER)  # any officer resumes a confirmed request
    assert resumed.executed_at is not None and resumed.request.decided_by == CHECKER.subject
    assert (await graphql(ops, CUSTOMER, {"id": customer_id}))["data"]["customer"]["erasedAt"] is not None
    assert not await database.fetchval(
        "SELECT wrapped_key IS NOT NULL FROM customer_data_keys WHERE customer_id = $1", customer_id
    )


async def test_the_export_holds_registration_profile_trail_documents_webhooks_and_the_keycloak_user(
    ops: httpx.AsyncClient, maker: httpx.AsyncClient
) -> None:
    customer, person = await _onboarded_person(ops, uuid.uuid4().hex[:8])
    assert _code(await graphql(ops, EXPORT, {"id": customer["id"]})) == "FORBIDDEN"
    assert _code(await graphql(maker, EXPORT, {"id": "not-an-id"})) == "BAD_USER_INPUT"
    assert _code(await graphql(maker, EXPORT, {"id": str(uuid.uuid4())})) == "NOT_FOUND"

    exported = (await graphql(maker, EXPORT, {"id": customer["id"]}))["data"]["customerDataExport"]["document"]
    assert exported["customerId"] == customer["id"]
    assert exported["customer"]["registration"]["email"] == person["email"]
    assert (exported["customer"]["status"], exported["customer"]["stage"]) == ("ACTIVE", "ONBOARDED")
    assert exported["profile"]["provided"] == {
        "first_name": person["firstName"],
        "last_name": person["lastName"],
        "company_name": None,
    }
    verified = exported["profile"]["verified"]["personal_info"]
    assert (verified["first_name"], verified["date_of_birth"]) == (person["firstName"], person["dob"])
    types = [event["type"] for event in exported["auditTrail"]]
    assert types[0] == "customer.registered" and {"kyc.approved", "customer.activated", "document.uploaded"} <= set(
        types
    )
    (document,) = exported["documents"]
    async with httpx.AsyncClient() as http:
        downloaded = await http.get(document["downloadUrl"])
    assert downloaded.status_code == 200 and hashlib.sha256(downloaded.content).hexdigest() == document["sha256"]
    assert document["originalFilename"] == f"contract-{person['lastName']}.pdf"
    webhooks = {webhook["type"] for webhook in exported["sumsubWebhooks"]}
    assert {"applicantCreated", "applicantReviewed"} <= webhooks
    assert exported["keycloakUser"]["email"] == person["email"]
    assert exported["keycloakUser"]["attributes"]["customer_id"] == [customer["id"]]
    trail = await graphql(
        ops, "query($id: ID!) { customer(id: $id) { events { type actor } } }", {"id": customer["id"]}
    )
    assert {"type": "customer.data_exported", "actor": "compliance"} in trail["data"]["customer"]["events"]


OVERRIDE = """mutation($id: ID!, $d: KycOverrideDecision!, $r: String!) {
  customerKycOverride(input: {customerId: $id, decision: $d, reason: $r}) { id kind state requestedBy } }"""
KYC = """query($id: ID!) { customer(id: $id) { status kyc { status decidedBy } onboarding { stage }
  events { type actor details } } }"""


async def test_a_kyc_override_requested_and_confirmed_by_two_officers_approves_a_declined_customer(
    ops: httpx.AsyncClient, maker: httpx.AsyncClient, checker: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    customer = await register(ops, f"override-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(ops, customer["id"], "AWAITING_KYC")
    early = await graphql(maker, OVERRIDE, {"id": customer["id"], "d": "APPROVE", "r": "checked"})
    assert _code(early) == "CONFLICT"  # nothing to override before a verdict
    await press(waiting["kyc"]["verificationUrl"], "submit")
    await wait_for_stage(ops, customer["id"], "KYC_IN_REVIEW")
    await press(waiting["kyc"]["verificationUrl"], "reject")
    await wait_for_stage(ops, customer["id"], "KYC_DECLINED")
    declined = (await graphql(ops, KYC, {"id": customer["id"]}))["data"]["customer"]
    assert declined["kyc"] == {"status": "DECLINED", "decidedBy": "SUMSUB"}

    assert _code(await graphql(ops, OVERRIDE, {"id": customer["id"], "d": "APPROVE", "r": "checked"})) == "FORBIDDEN"
    assert _code(await graphql(maker, OVERRIDE, {"id": customer["id"], "d": "DECLINE", "r": "x"})) == "CONFLICT"
    requested = await graphql(maker, OVERRIDE, {"id": customer["id"], "d": "APPROVE", "r": "documents checked by hand"})
    request = requested["data"]["customerKycOverride"]
    assert (request["kind"], request["state"]) == ("OVERRIDE_APPROVE", "PENDING")
    assert _code(await graphql(maker, CONFIRM, {"id": request["id"]})) == "CONFLICT"  # the same officer
    assert (await graphql(ops, KYC, {"id": customer["id"]}))["data"]["customer"]["onboarding"][
        "stage"
    ] == "KYC_DECLINED"

    confirmed = (await graphql(checker, CONFIRM, {"id": request["id"]}))["data"]["complianceRequestConfirm"]
    assert confirmed["state"] == "CONFIRMED" and confirmed["executedAt"] is not None
    active = await wait_for_stage(ops, customer["id"], "ONBOARDED")
    assert active["status"] == "ACTIVE"
    after = (await graphql(ops, KYC, {"id": customer["id"]}))["data"]["customer"]
    assert after["kyc"] == {"status": "APPROVED", "decidedBy": "MANUAL_OVERRIDE"}
    (row,) = [e for e in after["events"] if e["type"] == "kyc.override_approved"]
    details = row["details"]
    assert details["requested_by"] == request["requestedBy"] and details["decided_by"] == confirmed["decidedBy"]
    assert details["requested_at"] and details["decided_at"] and details["reason"] == "documents checked by hand"
    assert row["actor"] == "compliance-checker"

    # The answer lost after the workflow applied it (executed_at never written): confirming again marks it
    # executed and applies nothing twice.
    await database.execute("UPDATE four_eyes_requests SET executed_at = NULL WHERE id = $1", request["id"])
    again = await graphql(checker, CONFIRM, {"id": request["id"]})
    assert again["data"]["complianceRequestConfirm"]["executedAt"] is not None, again
    events = (await graphql(ops, KYC, {"id": customer["id"]}))["data"]["customer"]["events"]
    assert [e["type"] for e in events].count("kyc.override_approved") == 1


@asynccontextmanager
async def _hanging_server() -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """An address that accepts connections and answers nothing until released (then closes them): a Keycloak
    the erasure waits on. Yields (url, connected, release)."""
    connected, release = asyncio.Event(), asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connected, release
    finally:
        release.set()
        server.close()


async def test_a_confirmation_while_another_carries_the_request_out_is_refused_and_nothing_runs_twice(
    stack: DevStack, ops: httpx.AsyncClient, data_keys: DataKeyStore, database: asyncpg.Pool
) -> None:
    customer_id = await _closed_customer(ops, "claim")
    async with _hanging_server() as (url, connected, release), _service(stack, data_keys, keycloak_url=url) as slow:
        stored = await slow.request(RequestKind.ERASE, customer_id=customer_id, reason="asked", by=MAKER)
        first = asyncio.create_task(slow.confirm(stored.request.id, by=CHECKER))
        async with asyncio.timeout(60):
            await connected.wait()  # the first confirmation is carrying it out: it waits on Keycloak
        async with _service(stack, data_keys) as other:
            with pytest.raises(Conflict, match="carrying this request out"):
                await other.confirm(stored.request.id, by=MAKER)
        assert (await graphql(ops, CUSTOMER, {"id": customer_id}))["data"]["customer"]["erasedAt"] is None
        release.set()
        with pytest.raises(Unavailable, match="Keycloak"):
            await first
    # The failed execution gave its claim up: confirming again resumes at once and completes.
    async with _service(stack, data_keys) as service:
        resumed = await service.confirm(stored.request.id, by=MAKER)
    assert resumed.executed_at is not None and resumed.executing_since is None
    assert (await graphql(ops, CUSTOMER, {"id": customer_id}))["data"]["customer"]["erasedAt"] is not None


async def test_resuming_an_erasure_after_the_customer_became_active_again_is_refused_and_erases_nothing(
    stack: DevStack,
    ops: httpx.AsyncClient,
    maker: httpx.AsyncClient,
    checker: httpx.AsyncClient,
    database: asyncpg.Pool,
) -> None:
    customer = await register(ops, f"resume-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    waiting = await wait_for_stage(ops, customer["id"], "AWAITING_KYC")
    await press(waiting["kyc"]["verificationUrl"], "submit")
    await wait_for_stage(ops, customer["id"], "KYC_IN_REVIEW")
    await press(waiting["kyc"]["verificationUrl"], "reject")
    await wait_for_stage(ops, customer["id"], "KYC_DECLINED")
    erase = (await graphql(maker, ERASE, {"id": customer["id"], "r": "asked"}))["data"]["customerErase"]
    # What a confirmation interrupted before its first step leaves (the process died or an outage; its claim
    # given up): CONFIRMED, not executed.
    await database.execute(
        """
        UPDATE four_eyes_requests SET state = 'CONFIRMED', decided_by = 'checker-sub',
            decided_by_actor = 'compliance-checker', decided_at = now()
        WHERE id = $1
        """,
        erase["id"],
    )
    # Meanwhile the customer is approved by an override and becomes active.
    override = await graphql(maker, OVERRIDE, {"id": customer["id"], "d": "APPROVE", "r": "documents checked"})
    confirmed = await graphql(checker, CONFIRM, {"id": override["data"]["customerKycOverride"]["id"]})
    assert confirmed["data"]["complianceRequestConfirm"]["executedAt"] is not None, confirmed
    await wait_for_stage(ops, customer["id"], "ONBOARDED")

    resumed = await graphql(checker, CONFIRM, {"id": erase["id"]})
    assert _code(resumed) == "CONFLICT", resumed
    assert "no longer qualifies" in resumed["errors"][0]["message"]
    assert "close the customer first" in resumed["errors"][0]["message"]
    after = (await graphql(ops, CUSTOMER, {"id": customer["id"]}))["data"]["customer"]
    assert (after["status"], after["erasedAt"], after["onboarding"]["stage"]) == ("ACTIVE", None, "ONBOARDED")


async def test_an_upload_racing_the_erasure_is_refused_and_stores_nothing(
    stack: DevStack, ops: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    """The upload checks the customer under its lock: one that began before the erasure's PostgreSQL transaction
    committed is refused after it, and leaves no row and no object (it used to write both after the tombstone)."""
    customer = await register(ops, f"upload-race-{uuid.uuid4().hex[:8]}@example.com", "INDIVIDUAL")
    await wait_for_stage(ops, customer["id"], "AWAITING_KYC")
    settings = stack.settings()
    assert settings.database_url is not None
    pool = await db.pool.create_pool(settings.database_url, size=1)  # with the API's JSON codec
    try:
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            locked = await db.customers.lock_customer(conn, customer["id"])
            assert locked is not None
            holder = await conn.fetchval("SELECT pg_backend_pid()")
            racing = asyncio.create_task(upload(ops, customer["id"], PDF, "late.pdf", "application/pdf", "late"))
            async with asyncio.timeout(30):  # the upload waits for the customer's lock
                while not await database.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
                    " AND (query LIKE '%FOR UPDATE OF c%' OR query LIKE '%INSERT INTO customer_documents%')",
                    holder,
                ):
                    await asyncio.sleep(0.05)
            # The erasure's PostgreSQL step, as api/compliance.py runs it under the same lock.
            await db.customers.tombstone_customer(conn, _tombstone(locked, datetime.now(UTC)), erased_reason=ERASED)
            await transaction.commit()
        response = (await racing).json()
    finally:
        await pool.close()
    assert _code(response) == "CONFLICT" and "erased" in response["errors"][0]["message"], response
    assert (
        await database.fetchval("SELECT count(*) FROM customer_documents WHERE customer_id = $1", customer["id"]) == 0
    )
    store = object_store(settings)
    assert [meta async for batch in obstore.list(store, f"customers/{customer['id']}/") for meta in batch] == []


async def test_an_applicant_sumsub_no_longer_has_is_tolerated_as_keycloaks_missing_user(
    stack: DevStack, ops: httpx.AsyncClient, data_keys: DataKeyStore
) -> None:
    """A Sumsub that answers 404 for the applicant (another emulator, which never had it): the erasure goes on."""
    customer_id = await _closed_customer(ops, "sumsub-gone")
    settings = stack.settings()
    port = free_port()
    empty = create_app(
        app_token=settings.sumsub_app_token,
        secret_key=settings.sumsub_secret_key,
        webhook_url=None,
        webhook_secret="unused",
        public_url=f"http://127.0.0.1:{port}",
    )
    async with running_app(empty, port) as url, _service(stack, data_keys, sumsub_url=url) as service:
        stored = await service.request(RequestKind.ERASE, customer_id=customer_id, reason="asked", by=MAKER)
        done = await service.confirm(stored.request.id, by=CHECKER)
    assert done.executed_at is not None
    assert (await graphql(ops, CUSTOMER, {"id": customer_id}))["data"]["customer"]["erasedAt"] is not None


async def test_an_erasure_with_the_object_store_down_is_service_unavailable_and_resumes_once_it_is_back(
    stack: DevStack, ops: httpx.AsyncClient, maker: httpx.AsyncClient, checker: httpx.AsyncClient
) -> None:
    customer_id = await _closed_customer(ops, "s3-down")
    requested = (await graphql(maker, ERASE, {"id": customer_id, "r": "asked"}))["data"]["customerErase"]
    store = object_store(stack.settings())
    stack.kill("seaweedfs")
    try:
        down = await graphql(checker, CONFIRM, {"id": requested["id"]})
        assert _code(down) == "SERVICE_UNAVAILABLE" and "document store" in down["errors"][0]["message"], down
        assert (await graphql(ops, CUSTOMER, {"id": customer_id}))["data"]["customer"]["erasedAt"] is None
    finally:
        stack.restart("seaweedfs")
    async with asyncio.timeout(90):  # SeaweedFS answering again
        while True:
            try:
                [meta async for batch in obstore.list(store, "customers/") for meta in batch]
                break
            except obstore.exceptions.BaseError:
                await asyncio.sleep(0.5)
    resumed = (await graphql(checker, CONFIRM, {"id": requested["id"]}))["data"]["complianceRequestConfirm"]
    assert resumed["executedAt"] is not None
    assert (await graphql(ops, CUSTOMER, {"id": customer_id}))["data"]["customer"]["erasedAt"] is not None


async def test_two_officers_signed_in_as_themselves_through_the_console_make_the_four_eyes(
    stack: DevStack, ops: httpx.AsyncClient
) -> None:
    """Production's path: officers are realm users with the compliance role, signing in through the public client
    `compliance-console` (authorization code + PKCE); two of them are two subjects, whatever client they share."""
    customer_id = await _closed_customer(ops, "console")
    tokens = [
        await browser_token(
            stack.keycloak_url, name, password, client_id=COMPLIANCE_CONSOLE, redirect_uri=COMPLIANCE_CALLBACK
        )
        for name, password in DEV_OFFICERS
    ]
    anna, ben = (
        httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}) for token in tokens
    )
    async with anna, ben:
        requested = (await graphql(anna, ERASE, {"id": customer_id, "r": "asked"}))["data"]["customerErase"]
        assert requested["requestedByActor"] == COMPLIANCE_CONSOLE
        same = await graphql(anna, CONFIRM, {"id": requested["id"]})
        assert _code(same) == "CONFLICT" and "second compliance officer" in same["errors"][0]["message"]
        done = (await graphql(ben, CONFIRM, {"id": requested["id"]}))["data"]["complianceRequestConfirm"]
    assert done["executedAt"] is not None and done["decidedBy"] != requested["requestedBy"]
    assert done["decidedByActor"] == COMPLIANCE_CONSOLE


def test_an_erased_customers_kyc_upgrade_keeps_its_facts_and_loses_sumsubs_words_and_the_link() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    upgrade = KycUpgrade(
        level=KycLevel.ADVANCED,
        level_name="advanced-kyc-level",
        status=KycUpgradeStatus.DECLINED,
        requested_by="ops",
        started_at=now,
        ended_at=now,
        verification_url="https://sumsub.example/websdk/abc",
        moderation_comment="Jane Doe's passport is forged",
        reject_labels=["FORGERY"],
    )
    registration = Registration(
        customer_id=str(uuid.uuid4()), email="jane@example.com", customer_type=CustomerType.INDIVIDUAL
    )
    erased = _tombstone(
        CustomerState(registration=registration, created_at=now, updated_at=now, kyc_upgrade=upgrade), now
    )
    assert erased.kyc_upgrade is not None
    assert (erased.kyc_upgrade.status, erased.kyc_upgrade.level, erased.kyc_upgrade.reject_labels) == (
        KycUpgradeStatus.DECLINED,
        KycLevel.ADVANCED,
        ["FORGERY"],
    )
    assert "Jane" not in erased.model_dump_json() and "websdk" not in erased.model_dump_json()
