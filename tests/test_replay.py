"""Replays recorded histories of every workflow path against the current code: a change that would
break running customers' workflows (non-determinism) fails here, in CI, before it ships."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.customer import CustomerWorkflow
from workflows.delivery import EventDeliveryWorkflow

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def test_every_path_has_a_recorded_history() -> None:
    from tests.record_histories import DELIVERY_PATHS, PATHS

    assert {path.stem for path in HISTORIES} == set(PATHS) | set(DELIVERY_PATHS)


@pytest.mark.parametrize("history_file", HISTORIES, ids=lambda p: p.stem)
async def test_recorded_history_replays_on_the_current_workflow(history_file: Path) -> None:
    history = WorkflowHistory.from_json(f"replay-{history_file.stem}", history_file.read_text())
    replayer = Replayer(workflows=[CustomerWorkflow, EventDeliveryWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
