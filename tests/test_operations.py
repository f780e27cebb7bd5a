"""What ops see in Temporal: search attributes that find exactly the matching customers, the README's
Operations queries, and the workflow's summary and current details."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from db.data_keys import DataKeyStore
from dev.stack import DevStack
from kit.settings import Settings
from kit.temporal import connect
from tests.helpers import running_app
from tests.support.graphql import graphql, onboard, press, register, wait_for_stage
from workflows.visibility import CUSTOMER_TYPE, KYC_WAITING_SINCE, ONBOARDING_STAGE

README = Path(__file__).resolve().parent.parent / "README.md"


def operations_queries() -> list[str]:
    section = README.read_text().split("## Operations", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| [^|]+ \| `([^`]+)`", section, flags=re.MULTILINE)


async def ids_matching(client: Client, query: str) -> set[str]:
    return {wf.id async for wf in client.list_workflows(query)}


async def eventually_listed(client: Client, query: str, workflow_id: str) -> set[str]:
    deadline = time.monotonic() + 15
    while True:
        found = await ids_matching(client, query)
        if workflow_id in found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


@pytest.fixture
async def temporal(stack: DevStack, data_keys: DataKeyStore) -> Client:
    """A client configured as the stack's processes are (same converter and payload keys)."""
    return await connect(Settings(temporal_address=stack.temporal_address), data_keys=data_keys)


async def test_search_attributes_find_exactly_the_matching_customers(
    portal: httpx.AsyncClient, temporal: Client
) -> None:
    bank = await register(portal, "ops-bank@example.com", "BANK")
    person = await register(portal, "ops-person@example.com", "INDIVIDUAL")
    await wait_for_stage(portal, bank["id"], "AWAITING_KYC")
    await wait_for_stage(portal, person["id"], "AWAITING_KYC")
    query = "OnboardingStage = 'AWAITING_KYC' AND CustomerType = 'BANK'"
    found = await eventually_listed(temporal, query, f"customer-{bank['id']}")
    assert f"customer-{bank['id']}" in found and f"customer-{person['id']}" not in found
    for workflow_id in found:
        attributes = (await temporal.get_workflow_handle(workflow_id).describe()).typed_search_attributes
        assert attributes.get(ONBOARDING_STAGE) == "AWAITING_KYC" and attributes.get(CUSTOMER_TYPE) == "BANK"
        assert attributes.get(KYC_WAITING_SINCE) is not None

    onboarded = await onboard(portal, "ops-done@example.com", "BANK")
    done_id = f"customer-{onboarded['id']}"
    assert done_id in await eventually_listed(temporal, "OnboardingStage = 'ONBOARDED'", done_id)
    assert done_id not in await ids_matching(temporal, query)
    description = await temporal.get_workflow_handle(done_id).describe()
    assert description.typed_search_attributes.get(KYC_WAITING_SINCE) is None
    assert await description.static_summary() == "BANK customer o***@example.com"
    details = await temporal.get_workflow_handle(done_id).query("__temporal_workflow_metadata")
    assert "**Stage:** ONBOARDED" in details.current_details and "ops-done@example.com" not in details.current_details


# What each of the README's Operations queries must find among the customers below (by the name given
# to each), the rest of them being exactly what it must not find. Its date is three days ago, its id the bank's.
WAITING = {"bank", "person", "in_review", "on_hold", "resubmit"}
EXPECTED = {
    "OnboardingStage IN ('AWAITING_KYC', 'KYC_IN_REVIEW', 'KYC_ON_HOLD', 'KYC_RESUBMISSION_REQUESTED')": WAITING,
    "KycWaitingSince < '<three days ago>'": set(),  # every one of them began waiting moments ago
    "OnboardingStage = 'KYC_IN_REVIEW'": {"in_review"},
    "KycStatus = 'ON_HOLD'": {"on_hold"},
    "OnboardingStage = 'KYC_RESUBMISSION_REQUESTED'": {"resubmit"},
    "OnboardingStage = 'FAILED'": {"failed"},
    "OnboardingStage = 'KYC_DECLINED'": {"declined"},
    "OnboardingStage = 'EXPIRED'": {"expired"},
    "CustomerStatus = 'SUSPENDED'": {"suspended"},
    "OnboardingStage = 'AWAITING_KYC' AND CustomerType = 'BANK'": {"bank"},
    "CustomerId = '<customer id>'": {"bank"},
}
SUSPEND = (
    'mutation($id: ID!) { customerSuspend(input: {customerId: $id, reason: "ops query test"}) { customer { id } } }'
)


def readme_queries() -> list[str]:
    """The README's queries with their example date as a placeholder."""
    return [re.sub(r"'\d{4}-\d\d-\d\dT[^']+'", "'<three days ago>'", query) for query in operations_queries()]


@asynccontextmanager
async def api_expiring_kyc_after(stack: DevStack, expires_after: timedelta) -> AsyncIterator[str]:
    """A second API on the stack whose registrations give up on KYC after `expires_after` (the policy is
    fixed at registration, so the stack's own worker runs these workflows with it)."""
    settings = Settings(
        database_url=stack.child_env["DATABASE_URL"],
        temporal_address=stack.temporal_address,
        keycloak_url=stack.keycloak_url,
        sumsub_base_url=stack.sumsub_url,
        payload_encryption_keys=stack.child_env["PAYLOAD_ENCRYPTION_KEYS"],
        kyc_expires_after=expires_after,
        dev_secrets_allowed=True,  # the stack's emulators use the dev values
    )
    async with running_app(create_app(settings)) as url:
        yield url


async def customers_in_every_state(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient, keycloak_admin: Any
) -> dict[str, str]:
    """One customer in each state the README's queries look for, by name: their workflow ids."""
    tag = uuid.uuid4().hex[:8]

    def email(name: str) -> str:
        return f"readme-{name}-{tag}@example.com"

    async def waiting(name: str, customer_type: str = "INDIVIDUAL") -> dict[str, Any]:
        customer = await register(portal, email(name), customer_type)
        return await wait_for_stage(portal, customer["id"], "AWAITING_KYC")

    async def pressed(name: str, *steps: tuple[str, str]) -> dict[str, Any]:
        customer = await waiting(name)
        for action, stage in steps:
            await press(customer["kyc"]["verificationUrl"], action)
            customer = await wait_for_stage(portal, customer["id"], stage)
        return customer

    async def suspended() -> dict[str, Any]:
        customer = await onboard(portal, email("suspended"), "INDIVIDUAL")
        body = await graphql(ops, SUSPEND, {"id": customer["id"]})
        assert "errors" not in body, body
        return customer

    async def failed() -> dict[str, Any]:
        # Keycloak already has a user with this email, of another customer: onboarding fails (and is left for ops).
        await keycloak_admin.a_create_user(
            {
                "username": email("failed"),
                "email": email("failed"),
                "enabled": True,
                "attributes": {"customer_id": [str(uuid.uuid4())]},
            }
        )
        customer = await register(portal, email("failed"), "INDIVIDUAL")
        return await wait_for_stage(portal, customer["id"], "FAILED")

    async def expired() -> dict[str, Any]:
        async with (
            api_expiring_kyc_after(stack, timedelta(seconds=2)) as url,
            httpx.AsyncClient(base_url=url, headers=portal.headers, timeout=30) as quick,
        ):
            customer = await register(quick, email("expired"), "INDIVIDUAL")
        return await wait_for_stage(portal, customer["id"], "EXPIRED")

    submitted = ("submit", "KYC_IN_REVIEW")
    made = dict(
        zip(
            [
                "bank",
                "person",
                "in_review",
                "on_hold",
                "resubmit",
                "declined",
                "onboarded",
                "suspended",
                "failed",
                "expired",
            ],
            await asyncio.gather(
                waiting("bank", "BANK"),
                waiting("person"),
                pressed("in_review", submitted),
                pressed("on_hold", submitted, ("hold", "KYC_ON_HOLD")),
                pressed("resubmit", submitted, ("resubmit", "KYC_RESUBMISSION_REQUESTED")),
                pressed("declined", submitted, ("reject", "KYC_DECLINED")),
                onboard(portal, email("onboarded"), "PRIVATE_COMPANY"),
                suspended(),
                failed(),
                expired(),
            ),
            strict=True,
        )
    )
    return {name: customer["onboarding"]["workflowId"] for name, customer in made.items()}


async def eventually_exactly(client: Client, query: str, ours: dict[str, str], expected: set[str]) -> None:
    """Waits until, of our customers, the query lists exactly the expected ones (visibility lags a little)."""
    wanted = {ours[name] for name in expected}
    deadline = time.monotonic() + 15
    while (found := await ids_matching(client, query) & set(ours.values())) != wanted:
        if time.monotonic() > deadline:
            names = {workflow_id: name for name, workflow_id in ours.items()}
            raise AssertionError(f"{query}: found {sorted(names[w] for w in found)}, expected {sorted(expected)}")
        await asyncio.sleep(0.2)


async def test_every_readme_operations_query_finds_exactly_its_customers(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient, keycloak_admin: Any, temporal: Client
) -> None:
    queries = readme_queries()
    assert sorted(queries) == sorted(EXPECTED), "a README query without an expectation here, or the reverse"
    ours = await customers_in_every_state(stack, portal, ops, keycloak_admin)

    def at(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    bank_id = ours["bank"].removeprefix("customer-")
    for query in queries:
        concrete = query.replace("<customer id>", bank_id).replace(
            "<three days ago>", at(datetime.now(UTC) - timedelta(days=3))
        )
        await eventually_exactly(temporal, concrete, ours, EXPECTED[query])
    # The waiting-since filter does select by when waiting began: with tomorrow's date it finds every waiting one.
    waiting_since = "KycWaitingSince < '<three days ago>'"
    tomorrow = waiting_since.replace("<three days ago>", at(datetime.now(UTC) + timedelta(days=1)))
    await eventually_exactly(temporal, tomorrow, ours, WAITING)
