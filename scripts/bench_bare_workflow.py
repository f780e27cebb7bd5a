"""The bare Temporal ceilings `make bench` measures against, on the same server as our workflows and, like
our worker, without the sandbox:

- `BareRegistrationWorkflow`: what a registration costs Temporal at the least, an update-with-start whose
  update answers from the first workflow task;
- `BareOnboardingWorkflow`: `steps` no-op activities one after another; `make bench` gives it as many
  activities as one of our onboardings scheduled.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def bare_step(n: int) -> int:
    return n


@workflow.defn
class BareOnboardingWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        for n in range(steps):
            await workflow.execute_activity(bare_step, n, start_to_close_timeout=timedelta(seconds=15))
        return steps


@workflow.defn
class BareRegistrationWorkflow:
    def __init__(self) -> None:
        self._closed = False

    @workflow.update
    def register(self, email: str) -> str:
        return email

    @workflow.signal
    def close(self) -> None:
        self._closed = True

    @workflow.run
    async def run(self, email: str) -> str:
        await workflow.wait_condition(lambda: self._closed)
        return email
