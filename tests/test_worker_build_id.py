"""The worker's build id: in every workflow task it completes (ops reset workflows by it), a hash of our code
that changes when the code does, made without the SDK's default (compiling every loaded module: 1.5 s of CPU
at each worker start)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

import workers.main
from dev.stack import DevStack
from tests.support.graphql import REGISTER, graphql, wait_for_stage
from workers.main import code_build_id


def test_the_build_id_changes_with_the_code_and_only_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "workflows" / "customer.py"
    module.parent.mkdir()
    module.write_text("STEP = 1\n")
    (tmp_path / "README.md").write_text("not code")
    monkeypatch.setattr(workers.main, "CODE_ROOT", tmp_path)
    first = code_build_id()
    (tmp_path / "README.md").write_text("still not code")
    assert code_build_id() == first
    module.write_text("STEP = 2\n")
    assert code_build_id() != first
    module.write_text("STEP = 1\n")
    assert code_build_id() == first


async def test_every_workflow_task_names_the_workers_build_id(stack: DevStack, portal: httpx.AsyncClient) -> None:
    body = await graphql(
        portal,
        REGISTER,
        {"input": {"email": f"build-{uuid.uuid4().hex[:12]}@example.com", "customerType": "INDIVIDUAL"}},
    )
    assert "errors" not in body, body
    customer = await wait_for_stage(portal, body["data"]["customerRegister"]["customer"]["id"], "AWAITING_KYC")
    client = await Client.connect(stack.temporal_address)
    history = await client.get_workflow_handle(customer["onboarding"]["workflowId"]).fetch_history()
    completed = [
        event.workflow_task_completed_event_attributes.worker_version.build_id
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    assert len(completed) >= 3
    assert set(completed) == {code_build_id()}
