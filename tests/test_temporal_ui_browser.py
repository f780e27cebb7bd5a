"""Seen in a real browser: the Temporal dev server's Web UI, in headless Chromium, lists customers by their
search attributes and shows a workflow's input decrypted through the API's /codec, while Temporal itself
holds only ciphertext.

The stack here is our own, not the session's: the dev server's UI cannot forward a token to the codec,
so it runs with CODEC_AUTH_REQUIRED=false (as `make dev` does), and the session stack keeps the codec's
authentication on for the tests of it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Request, Response, expect
from temporalio.api.history.v1 import History
from temporalio.client import Client

from dev.stack import REPO_ROOT, DevStack, Ports
from kit.codec import ENCRYPTED_ENCODING
from tests.browser import chromium_context, ensure_chromium
from tests.helpers import running_stack
from tests.support.emulators import client_token
from tests.support.graphql import onboard, register, wait_for_stage

pytestmark = pytest.mark.stack  # a stack of its own and chromium

ARTIFACTS = REPO_ROOT / "test-artifacts"
UI_TIMEOUT_MS = 20_000


@pytest_asyncio.fixture(scope="session")
async def chromium() -> Path:
    """Debian's chromium, installed with apt when missing; a failure fails the test (no skip)."""
    return await asyncio.to_thread(ensure_chromium)


@pytest_asyncio.fixture(scope="module")
async def ui_stack() -> AsyncIterator[DevStack]:
    ports = Ports.free()
    env = {
        "CODEC_AUTH_REQUIRED": "false",  # the dev server's UI sends no token (loopback only)
        "TEMPORAL_UI_ORIGIN": f"http://127.0.0.1:{ports.temporal_ui}",
    }
    async with running_stack(env, ports=ports, persistent_temporal=False) as dev:
        yield dev


def _query_param(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if parts.path != "/namespaces/default/workflows":
        return None
    return urllib.parse.parse_qs(parts.query).get("query", [None])[0]


async def _wait_for_visibility(client: Client, query: str, expected: set[str], timeout: float = 15.0) -> None:
    """Visibility is eventually consistent: wait until the server's own list answers what the UI should show."""
    deadline = time.monotonic() + timeout
    while True:
        found = {wf.id async for wf in client.list_workflows(query)}
        if found == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"visibility never listed {expected} for {query!r}; last {found}")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(900)  # a first run installs chromium with apt; afterwards the test takes well under a minute
async def test_temporal_ui_lists_customers_by_stage_and_decodes_their_input(ui_stack: DevStack, chromium: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    individual_email, bank_email, waiting_email = (
        f"ui-{kind}-{tag}@example.com" for kind in ("individual", "bank", "waiting")
    )
    token = await client_token(ui_stack, "portal", "portal-dev-secret")
    async with httpx.AsyncClient(
        base_url=ui_stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as portal:
        individual, bank = await asyncio.gather(
            onboard(portal, individual_email, "INDIVIDUAL"), onboard(portal, bank_email, "BANK")
        )
        # Registered but never through KYC: inside the CustomerId filter, outside OnboardingStage = 'ONBOARDED'.
        waiting = await register(portal, waiting_email, "INDIVIDUAL")
        await wait_for_stage(portal, waiting["id"], "AWAITING_KYC")
    ids = [individual["id"], bank["id"], waiting["id"]]
    query = 'OnboardingStage = "ONBOARDED" AND CustomerId IN (' + ", ".join(f'"{i}"' for i in ids) + ")"
    expected = {individual["onboarding"]["workflowId"], bank["onboarding"]["workflowId"]}

    # What Temporal stores, read by a client without the codec: ciphertext only.
    raw_client = await Client.connect(ui_stack.temporal_address)
    await _wait_for_visibility(raw_client, query, expected)
    history = await raw_client.get_workflow_handle(individual["onboarding"]["workflowId"]).fetch_history()
    raw = History(events=history.events).SerializeToString()
    assert len(history.events) > 20
    assert individual_email.encode() not in raw and f"ui-individual-{tag}".encode() not in raw
    assert individual_email not in history.to_json()
    started = history.events[0].workflow_execution_started_event_attributes
    assert [p.metadata["encoding"] for p in started.input.payloads] == [ENCRYPTED_ENCODING]

    ui = f"http://127.0.0.1:{ui_stack.ports.temporal_ui}"
    decode_url = f"{ui_stack.api_url}/codec/decode"
    decode_requests: list[Request] = []
    decode_statuses: list[int] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and request.url.split("?")[0] == decode_url:
            decode_requests.append(request)

    def on_response(response: Response) -> None:
        if response.request.method == "POST" and response.url.split("?")[0] == decode_url:
            decode_statuses.append(response.status)

    ARTIFACTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with chromium_context(chromium, Path(profile)) as browser:
            browser.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            page = browser.pages[0] if browser.pages else await browser.new_page()
            page.on("request", on_request)
            page.on("response", on_response)

            # The list, filtered the way ops would: the raw-query box of the Workflows page.
            await page.goto(f"{ui}/namespaces/default/workflows")
            await page.get_by_test_id("toggle-manual-query").click()
            await page.get_by_test_id("workflow-manual-search-input").fill(query)
            await page.get_by_test_id("workflow-manual-search-button").click()
            await page.wait_for_url(lambda url: _query_param(url) == query)  # the filter is in the URL, shareable
            rows = page.locator("table tbody tr")
            await expect(rows).to_have_count(len(expected))
            for workflow_id in expected:
                await expect(rows.filter(has=page.get_by_role("link", name=workflow_id, exact=True))).to_have_count(1)
            assert waiting["onboarding"]["workflowId"] not in await page.locator("table").inner_text()
            await page.screenshot(path=str(ARTIFACTS / "temporal-ui-list.png"))

            # One workflow: its input, decrypted in the browser by the API's codec server.
            await page.get_by_role("link", name=individual["onboarding"]["workflowId"], exact=True).click()
            input_box = page.get_by_role("textbox", name="Input")
            await expect(input_box).to_contain_text(f'"email": "{individual_email}"')
            await expect(input_box).to_contain_text('"customer_type": "INDIVIDUAL"')
            await page.screenshot(path=str(ARTIFACTS / "temporal-ui.png"))

    assert decode_requests, "the UI never called the codec server"
    assert all(r.headers.get("x-namespace") == "default" for r in decode_requests)
    assert decode_statuses and set(decode_statuses) == {200}, decode_statuses
