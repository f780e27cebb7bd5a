"""WORKER_MAX_CACHED_WORKFLOWS (README: Configuration) bounds the worker's sticky workflow cache below the SDK's
1000: each cached customer workflow holds about 127 KB of the worker's memory (430 KB in the sandbox), and a
customer waiting weeks for KYC need not stay in it, since an evicted workflow replays its history on its next
event. `make bench BENCH_ARGS="--rows waiting"` measures the worker's RSS with 10,000 customers waiting."""

from __future__ import annotations

import pydantic
import pytest

from kit.settings import Settings


def test_the_default_cache_holds_a_burst_but_stays_below_the_sdks_thousand() -> None:
    assert 200 <= Settings(_env_file=None).worker_max_cached_workflows < 1000


def test_the_setting_is_read_from_the_environment_and_zero_turns_the_cache_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_MAX_CACHED_WORKFLOWS", "0")
    assert Settings(_env_file=None).worker_max_cached_workflows == 0
    monkeypatch.setenv("WORKER_MAX_CACHED_WORKFLOWS", "-1")
    with pytest.raises(pydantic.ValidationError):
        Settings(_env_file=None)
