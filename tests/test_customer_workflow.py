"""CustomerWorkflow on a real Temporal dev server with stand-in activities registered under the real
activity names (the end-to-end tests run the real ones). Nothing here waits on a timer, so the
time-skipping server (which has no search attributes) is not needed."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database import OpenDepositAccountInput, RecordChangeInput
from activities.keycloak import ProvisionUserInput, SetUserEnabledInput
from activities.sumsub import ApplicantRef, CreateApplicantInput, CreateKycLinkInput
from lifecycle.domain import CustomerType
from lifecycle.search_attributes import ALL_KEYS
from lifecycle.models import CustomerState, CustomerWorkflowInput, KycEvent, KycEventKind, Registration
from workflows.customer import CustomerWorkflow


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    ) as environment:
        yield environment


class FakeWorld:
    """Stand-ins for the side effects, recording what the workflow asked for."""

    def __init__(self, *, keycloak_conflict: bool = False) -> None:
        self.keycloak_conflict = keycloak_conflict
        self.recorded: list[str] = []
        self.accounts: list[OpenDepositAccountInput] = []
        self.user_enabled: list[bool] = []

    def activities(self) -> list:
        @activity.defn(name="record_change")
        async def record_change(change: RecordChangeInput) -> None:
            self.recorded.append(change.event_type)

        @activity.defn(name="open_deposit_account")
        async def open_deposit_account(request: OpenDepositAccountInput) -> dict:
            self.accounts.append(request)
            return {"id": request.account_id, "category": request.category, "status": "ACTIVE",
                    "created_at": datetime.now(UTC).isoformat()}

        @activity.defn(name="provision_keycloak_user")
        async def provision_keycloak_user(request: ProvisionUserInput) -> str:
            if self.keycloak_conflict:
                raise ApplicationError("belongs to another customer", type="KeycloakUserConflict", non_retryable=True)
            return "kc-user-1"

        @activity.defn(name="set_keycloak_user_enabled")
        async def set_keycloak_user_enabled(request: SetUserEnabledInput) -> None:
            self.user_enabled.append(request.enabled)

        @activity.defn(name="create_sumsub_applicant")
        async def create_sumsub_applicant(request: CreateApplicantInput) -> str:
            return "applicant-1"

        @activity.defn(name="create_kyc_link")
        async def create_kyc_link(request: CreateKycLinkInput) -> str:
            return "https://sumsub.example/websdk/abc"

        @activity.defn(name="deactivate_sumsub_applicant")
        async def deactivate_sumsub_applicant(request: ApplicantRef) -> None:
            return None

        return [record_change, open_deposit_account, provision_keycloak_user, set_keycloak_user_enabled,
                create_sumsub_applicant, create_kyc_link, deactivate_sumsub_applicant]


def event(kind: KycEventKind, minute: int, key: str | None = None, applicant_id: str = "applicant-1",
          comment: str | None = None) -> KycEvent:
    return KycEvent(
        kind=kind,
        sumsub_type="applicantReviewed",
        applicant_id=applicant_id,
        occurred_at=datetime(2026, 1, 1, 12, minute, tzinfo=UTC),
        dedupe_key=key or f"{kind.value}:{minute}",
        moderation_comment=comment,
    )


async def start(env: WorkflowEnvironment, world: FakeWorld, task_queue: str,
                customer_type: CustomerType = CustomerType.INDIVIDUAL) -> WorkflowHandle:
    customer_id = str(uuid.uuid4())
    registration = Registration(customer_id=customer_id, email="ada@example.com", customer_type=customer_type)
    return await env.client.start_workflow(
        CustomerWorkflow.run,
        CustomerWorkflowInput(registration=registration),
        id=f"customer-{customer_id}",
        task_queue=task_queue,
    )


async def wait_for(handle: WorkflowHandle, stage: str) -> CustomerState:
    for _ in range(200):
        state = await handle.query(CustomerWorkflow.state)
        if state.stage.value == stage:
            return state
        await _tick()
    raise AssertionError(f"never reached {stage}")


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.05)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


async def test_approval_opens_one_account_and_activates(env: WorkflowEnvironment, task_queue: str) -> None:
    world = FakeWorld()
    async with Worker(env.client, task_queue=task_queue, workflows=[CustomerWorkflow], activities=world.activities()):
        handle = await start(env, world, task_queue, CustomerType.BANK)
        await wait_for(handle, "AWAITING_KYC")
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.SUBMITTED, 1))
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.APPROVED, 2))
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.APPROVED, 2))  # duplicate delivery
        state = await handle.result()
    assert state.status.value == "ACTIVE" and state.kyc_level.value == "BASIC" and state.stage.value == "ONBOARDED"
    assert [a.category.value for a in world.accounts] == ["INTERBANK"]
    assert world.recorded[0] == "customer.registered" and world.recorded[-1] == "customer.activated"



async def test_events_apply_in_created_at_order_and_stale_ones_are_ignored(env: WorkflowEnvironment, task_queue: str) -> None:
    world = FakeWorld()
    async with Worker(env.client, task_queue=task_queue, workflows=[CustomerWorkflow], activities=world.activities()):
        handle = await start(env, world, task_queue)
        await wait_for(handle, "AWAITING_KYC")
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.ON_HOLD, 5))
        on_hold = await wait_for(handle, "KYC_ON_HOLD")
        # Older than the hold, delivered late: must not move the customer back to "in review".
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.SUBMITTED, 3))
        # Another applicant's event (misrouted) changes nothing either.
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.APPROVED, 6, applicant_id="someone-else"))
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.RESUBMISSION_REQUESTED, 7, comment="blurry"))
        state = await wait_for(handle, "KYC_RESUBMISSION_REQUESTED")
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.APPROVED, 9))
        final = await handle.result()
    assert on_hold.kyc_status.value == "ON_HOLD"
    assert state.kyc_status.value == "RESUBMISSION_REQUESTED" and state.moderation_comment == "blurry"
    assert final.stage.value == "ONBOARDED" and len(world.accounts) == 1
    assert world.recorded.count("kyc.event_ignored") == 2


async def test_final_rejection_declines_and_disables_the_user(env: WorkflowEnvironment, task_queue: str) -> None:
    world = FakeWorld()
    async with Worker(env.client, task_queue=task_queue, workflows=[CustomerWorkflow], activities=world.activities()):
        handle = await start(env, world, task_queue)
        await wait_for(handle, "AWAITING_KYC")
        await handle.signal(CustomerWorkflow.kyc_event, event(KycEventKind.DECLINED, 1))
        final = await handle.result()
    assert (final.stage.value, final.status.value, final.kyc_status.value) == ("KYC_DECLINED", "INACTIVE", "DECLINED")
    assert world.user_enabled == [False] and world.accounts == []


async def test_a_keycloak_user_of_another_customer_fails_onboarding_with_the_reason(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    world = FakeWorld(keycloak_conflict=True)
    async with Worker(env.client, task_queue=task_queue, workflows=[CustomerWorkflow], activities=world.activities()):
        handle = await start(env, world, task_queue)
        final = await handle.result()
    assert final.stage.value == "FAILED"
    assert final.last_error is not None and final.last_error.startswith("KeycloakUserConflict")
    assert world.recorded[-1] == "onboarding.failed"
