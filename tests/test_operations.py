"""What ops see in Temporal: search attributes that find exactly the matching customers, the README's
Operations queries, and the workflow's summary and current details."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from dev.stack import DevStack
from kit.settings import Settings
from kit.temporal import connect
from tests.test_end_to_end import onboard, register, wait_for_stage
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
async def temporal(stack: DevStack) -> Client:
    """A client configured as the stack's processes are (same converter and payload keys)."""
    return await connect(Settings(temporal_address=stack.temporal_address))


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


async def test_every_readme_operations_query_runs(temporal: Client) -> None:
    queries = operations_queries()
    assert len(queries) >= 10
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for query in queries:
        concrete = query.replace("<customer id>", "00000000-0000-8000-8000-000000000000")
        concrete = re.sub(r"'\d{4}-\d\d-\d\dT[^']+'", f"'{three_days_ago}'", concrete)
        await ids_matching(temporal, concrete)  # raises on a query the server rejects
