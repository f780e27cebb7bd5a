"""The emulators remember: with a state dir, a new emulator process on the same folder carries on where
the last one stopped (Sumsub: applicants, WebSDK links, the delivery log and webhooks still to deliver).

Each emulator is served in-process over real HTTP, twice on the same folder; the dev stack's own
kill-and-restart of the emulator processes is in `test_dev_stack_supervision.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dev.emulators import sumsub
from dev.emulators.state import Store
from integrations.sumsub.client import SumsubClient
from tests.helpers import free_port, running_app

pytestmark = pytest.mark.stack  # serves emulators and a webhook receiver on loopback

APP_TOKEN = "sbx:state-test-token"
SECRET_KEY = "state-test-secret"
WEBHOOK_SECRET = "state-test-webhook-secret"
LEVEL = "basic-kyc-level"


class Receiver:
    """Our side of the webhooks: answers `status` (500 until told otherwise) and keeps every body."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []

    async def endpoint(self, request: Request) -> Response:
        self.bodies.append(json.loads(await request.body()))
        return Response(status_code=self.status)


@asynccontextmanager
async def sumsub_emulator(state_dir: Path, receiver: Receiver, port: int) -> AsyncIterator[SumsubClient]:
    receiver_app = Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
    async with running_app(receiver_app) as receiver_url:
        app = sumsub.create_app(
            app_token=APP_TOKEN,
            secret_key=SECRET_KEY,
            webhook_url=f"{receiver_url}/hook",
            webhook_secret=WEBHOOK_SECRET,
            public_url=f"http://127.0.0.1:{port}",
            retry_delays=(0.2, 0.2, 0.2, 0.2),
            state_dir=state_dir,
        )
        async with (
            running_app(app, port) as url,
            SumsubClient(base_url=url, app_token=APP_TOKEN, secret_key=SECRET_KEY) as client,
        ):
            yield client


async def eventually(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return result


async def test_sumsub_emulator_remembers_applicants_links_and_pending_webhooks(tmp_path: Path) -> None:
    port = free_port()
    refusing = Receiver(status=500)
    async with sumsub_emulator(tmp_path, refusing, port) as client:
        applicant, _ = await client.create_applicant(
            external_user_id="kept-1", level_name=LEVEL, applicant_type="individual", email="kept@example.com"
        )
        link = await client.create_websdk_link(external_user_id="kept-1", level_name=LEVEL, ttl_seconds=600)
        async with httpx.AsyncClient() as browser:
            assert (await browser.post(f"{link}/submit")).status_code == 303
        # Both webhooks (created, pending) failed once and wait for their resend when the emulator stops.
        await eventually(lambda: {b["type"] for b in refusing.bodies} == {"applicantCreated", "applicantPending"})
        await eventually(lambda: len(Store(tmp_path).read_lines(sumsub.DELIVERY_LOG)) >= 2)

    accepting = Receiver(status=200)
    async with sumsub_emulator(tmp_path, accepting, port) as client:
        again = await client.get_applicant(applicant.id)
        assert again.model_dump(exclude={"review"}) == applicant.model_dump(exclude={"review"})
        assert again.review.review_status == "pending" and again.review.attempt_cnt == 1
        assert (await client.get_applicant_by_external_user_id("kept-1")) == again
        async with httpx.AsyncClient() as browser:
            page = await browser.get(link)
            assert page.status_code == 200 and applicant.id in page.text
        # The stored deliveries are resent to the new receiver: the same bodies, nothing else.
        delivered = await eventually(lambda: len(accepting.bodies) >= 2 and accepting.bodies)
        created = [b for b in refusing.bodies if b["type"] == "applicantCreated"][0]
        assert created in delivered and {b["type"] for b in delivered} == {"applicantCreated", "applicantPending"}
        async with httpx.AsyncClient() as http:
            log = (await http.get(f"http://127.0.0.1:{port}/_emulator/deliveries")).json()
        by_delivery: dict[str, list[str]] = {}
        for entry in log:
            by_delivery.setdefault(entry["deliveryId"], []).append(entry["outcome"])
        assert len(by_delivery) == 2
        assert all(outcomes[0] == "retrying" and outcomes[-1] == "delivered" for outcomes in by_delivery.values())
    assert Store(tmp_path).read_all(sumsub.PENDING_DIR) == {}


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_a_new_line(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text('{"n":1}\n{"n":')
    store = Store(tmp_path)
    assert store.read_lines("log.jsonl") == [{"n": 1}]
    store.append("log.jsonl", {"n": 3})
    assert store.read_lines("log.jsonl") == [{"n": 1}, {"n": 3}]
    store.write("doc.json", {"a": 1})
    assert store.read("doc.json") == {"a": 1} and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
