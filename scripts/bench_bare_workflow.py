"""The bare Temporal ceilings `make bench` measures against, on the same server as our workflows and, like
our worker, without the sandbox:

- `BareRegistrationWorkflow`: what a registration costs Temporal at the least, an update-with-start whose
  update answers from the first workflow task;
- `BareOnboardingWorkflow`: `steps` no-op activities one after another; `make bench` gives it as many
  activities as one of our onboardings scheduled, then runs it again with as many search-attribute upserts as
  that onboarding made (each before an activity, as ours upserts before a record): what ops' view in the
  Temporal UI costs the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

from workflows.visibility import CUSTOMER_STATUS, KYC_STATUS, ONBOARDING_STAGE


@activity.defn
async def bare_step(n: int) -> int:
    return n


@dataclass(frozen=True)
class BareOnboarding:
    steps: int
    upserts: int = 0


@workflow.defn
class BareOnboardingWorkflow:
    @workflow.run
    async def run(self, plan: BareOnboarding) -> int:
        for n in range(plan.steps):
            if n < plan.upserts:
                workflow.upsert_search_attributes(
                    [
                        CUSTOMER_STATUS.value_set("INACTIVE"),
                        KYC_STATUS.value_set("NOT_STARTED"),
                        ONBOARDING_STAGE.value_set(f"BARE_{n}"),
                    ]
                )
            await workflow.execute_activity(bare_step, n, start_to_close_timeout=timedelta(seconds=15))
        return plan.steps


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
