"""CustomerWorkflow on a real Temporal dev server with stand-in activities registered under the real
activity names (the end-to-end tests run the real ones). Time-dependent paths run here with durations
of seconds; test_customer_workflow_timers.py runs the real durations on the time-skipping server."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database import (
    AuditEntry,
    OpenDepositAccountInput,
    RecordChangeInput,
    RecordChangesInput,
    SetAccountStatusInput,
)
from activities.keycloak import ChangeUserEmailInput, ProvisionedUser, ProvisionUserInput, SetUserEnabledInput, UserRef
from activities.notifications import Notification
from activities.profiles import StoredProfileFields, StoreVerifiedProfileInput
from activities.sumsub import (
    ApplicantRef,
    ChangeApplicantEmailInput,
    CreateApplicantInput,
    CreateKycLinkInput,
    MoveToLevelInput,
)
from domain import kyc_rules
from domain.customer import CustomerType, KycDecidedBy
from domain.errors import ErrorType
from domain.events import published_type
from domain.kyc import KycEvent, KycEventKind
from domain.state import (
    ChangeEmailRequest,
    CloseRequest,
    CustomerState,
    CustomerWorkflowInput,
    KycLevelUpgradeRequest,
    KycOverrideRequest,
    OnboardingPolicy,
    ReactivateRequest,
    Registration,
    RetryOnboardingRequest,
    SuspendRequest,
)
from workflows.customer import CustomerWorkflow
from workflows.visibility import ALL_KEYS

# On Temporal's own dev server, with a worker in this process: fast enough for the quick loop, so marked
# `workflow` (not `stack`): `pytest -m "not stack"` runs them, `-m "not stack and not workflow"` does not.
pytestmark = pytest.mark.workflow

TEMPORAL_CLI = str(Path(sys.executable).parent / "temporal")
# Long enough that nothing time-driven happens unless a test asks for it.
QUIET = OnboardingPolicy(reminders_after=[], expires_after=timedelta(hours=1), status_poll_interval=timedelta(hours=1))


async def _local_env(*extra_args: str) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=TEMPORAL_CLI,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
        dev_server_extra_args=list(extra_args),
    )


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await _local_env() as environment:
        yield environment


class FakeWorld:
    """Stand-ins for the side effects, recording what the workflow asked for."""

    def __init__(self) -> None:
        self.keycloak_conflict = False
        self.kyc_link_rejected = False
        self.kyc_link_outages = 0  # transient failures before create_kyc_link succeeds
        self.polled_review: KycEvent | None = None
        self.recorded: list[str] = []
        self.record_activities = 0  # record_change and record_changes calls
        self.sequences: list[int] = []  # each audit row's position in the run, in the order written
        self.record_gate = asyncio.Event()  # cleared: recording waits (the workflow is busy meanwhile)
        self.record_gate.set()
        self.records_held = 0
        self.actors: list[str] = []
        self.accounts: list[OpenDepositAccountInput] = []
        self.account_statuses: list[str] = []
        self.user_enabled: list[bool] = []
        self.deleted_users: list[str] = []
        self.deactivated_applicants: list[str] = []
        self.notifications: list[Notification] = []
        self.polls = 0
        self.email_taken_in_keycloak = False
        self.keycloak_refuses = False  # as when its service account lost manage-users: a 403 for good
        self.keycloak_emails: list[str] = []
        self.sumsub_emails: list[str] = []
        self.details: list[dict[str, Any]] = []
        self.calls: list[str] = []  # the order of the side effects that matter to a test
        self.profile_outages = 0  # transient failures before store_verified_profile succeeds
        self.profile_reads: list[StoreVerifiedProfileInput] = []
        self.level_moves: list[MoveToLevelInput] = []
        self.level_move_refused = False  # Sumsub: a review is pending, queued or on hold
        self.level_move_down = False  # Sumsub does not answer
        self.kyc_link_levels: list[str] = []

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="record_change")
        async def record_change(change: RecordChangeInput) -> None:
            await record_changes(
                RecordChangesInput(
                    state=change.state,
                    entries=[
                        AuditEntry(
                            event_type=change.event_type,
                            sequence=change.sequence,
                            actor=change.actor,
                            details=change.details,
                            occurred_at=change.state.updated_at,
                        )
                    ],
                )
            )

        @activity.defn(name="record_changes")
        async def record_changes(changes: RecordChangesInput) -> None:
            if any(published_type(entry.event_type, entry.details) for entry in changes.entries[:-1]):
                raise ApplicationError("only the last change of a batch may publish", non_retryable=True)
            if not self.record_gate.is_set():
                self.records_held += 1
                await self.record_gate.wait()
            for entry in changes.entries:
                self.recorded.append(entry.event_type)
                self.actors.append(entry.actor)
                self.details.append(entry.details)
                self.sequences.append(entry.sequence)
            self.record_activities += 1

        @activity.defn(name="open_deposit_account")
        async def open_deposit_account(request: OpenDepositAccountInput) -> dict:
            self.accounts.append(request)
            self.calls.append("open_deposit_account")
            return {
                "id": request.account_id,
                "category": request.category,
                "status": "ACTIVE",
                "created_at": datetime.now(UTC).isoformat(),
            }

        @activity.defn(name="set_deposit_account_status")
        async def set_deposit_account_status(request: SetAccountStatusInput) -> dict:
            self.account_statuses.append(request.status.value)
            return {
                "id": "acc",
                "category": "INDIVIDUAL",
                "status": request.status,
                "created_at": datetime.now(UTC).isoformat(),
            }

        @activity.defn(name="provision_keycloak_user")
        async def provision_keycloak_user(request: ProvisionUserInput) -> ProvisionedUser:
            if self.keycloak_conflict:
                raise ApplicationError("belongs to another customer", type="KeycloakUserConflict", non_retryable=True)
            return ProvisionedUser(user_id="kc-user-1")

        @activity.defn(name="set_keycloak_user_enabled")
        async def set_keycloak_user_enabled(request: SetUserEnabledInput) -> None:
            if self.keycloak_refuses:
                raise ApplicationError(
                    "Keycloak refused the request (403)", type="KeycloakRejected", non_retryable=True
                )
            self.user_enabled.append(request.enabled)

        @activity.defn(name="delete_keycloak_user")
        async def delete_keycloak_user(request: UserRef) -> None:
            self.deleted_users.append(request.user_id)

        @activity.defn(name="create_sumsub_applicant")
        async def create_sumsub_applicant(request: CreateApplicantInput) -> str:
            return "applicant-1"

        @activity.defn(name="create_kyc_link")
        async def create_kyc_link(request: CreateKycLinkInput) -> str:
            if self.kyc_link_rejected:
                raise ApplicationError("level not found", type="SumsubRejected", non_retryable=True)
            if self.kyc_link_outages:
                self.kyc_link_outages -= 1
                raise ConnectionError("Sumsub unreachable")
            self.kyc_link_levels.append(request.level.value)
            return f"https://sumsub.example/websdk/{request.level.value.lower()}"

        @activity.defn(name="move_sumsub_applicant_to_level")
        async def move_sumsub_applicant_to_level(request: MoveToLevelInput) -> str:
            if self.level_move_refused:
                raise ApplicationError("Sumsub refused the request (400)", type="SumsubRejected", non_retryable=True)
            if self.level_move_down:
                raise ConnectionError("Sumsub unreachable")
            self.level_moves.append(request)
            return ADVANCED_LEVEL

        @activity.defn(name="deactivate_sumsub_applicant")
        async def deactivate_sumsub_applicant(request: ApplicantRef) -> None:
            self.deactivated_applicants.append(request.applicant_id)

        @activity.defn(name="poll_kyc_review")
        async def poll_kyc_review(request: ApplicantRef) -> KycEvent | None:
            self.polls += 1
            return self.polled_review

        @activity.defn(name="change_keycloak_user_email")
        async def change_keycloak_user_email(request: ChangeUserEmailInput) -> None:
            if self.email_taken_in_keycloak and request.email == "taken@example.com":
                raise ApplicationError("taken", type="KeycloakUserConflict", non_retryable=True)
            self.keycloak_emails.append(request.email)

        @activity.defn(name="change_sumsub_applicant_email")
        async def change_sumsub_applicant_email(request: ChangeApplicantEmailInput) -> None:
            self.sumsub_emails.append(request.email)

        @activity.defn(name="notify_customer")
        async def notify_customer(notification: Notification) -> None:
            self.notifications.append(notification)

        @activity.defn(name="store_verified_profile")
        async def store_verified_profile(request: StoreVerifiedProfileInput) -> StoredProfileFields:
            if self.profile_outages:
                self.profile_outages -= 1
                raise ConnectionError("Sumsub unreachable")
            self.profile_reads.append(request)
            self.calls.append("store_verified_profile")
            # The first read stores the names; a re-read finds one changed (what Sumsub's edit did).
            first = len(self.profile_reads) == 1
            return StoredProfileFields(
                changed_fields=["personal_info.first_name", "personal_info.last_name"]
                if first
                else ["personal_info.last_name"]
            )

        return [
            record_change,
            record_changes,
            open_deposit_account,
            set_deposit_account_status,
            provision_keycloak_user,
            set_keycloak_user_enabled,
            delete_keycloak_user,
            create_sumsub_applicant,
            create_kyc_link,
            move_sumsub_applicant_to_level,
            deactivate_sumsub_applicant,
            poll_kyc_review,
            notify_customer,
            change_keycloak_user_email,
            change_sumsub_applicant_email,
            store_verified_profile,
        ]


def event(
    kind: KycEventKind,
    minute: int,
    applicant_id: str = "applicant-1",
    comment: str | None = None,
    level_name: str | None = None,
) -> KycEvent:
    return KycEvent(
        kind=kind,
        sumsub_type="applicantReviewed",
        applicant_id=applicant_id,
        occurred_at=datetime(2026, 1, 1, 12, minute, tzinfo=UTC),
        dedupe_key=f"{kind.value}:{minute}:{applicant_id}:{level_name}",
        moderation_comment=comment,
        reject_labels=["FORGERY"] if kind is KycEventKind.DECLINED and level_name else [],
        level_name=level_name,
    )


ADVANCED_LEVEL = "advanced-kyc-level"


class Case:
    """One customer workflow with its own worker and fake world."""

    def __init__(self, env: WorkflowEnvironment, world: FakeWorld, policy: OnboardingPolicy) -> None:
        self.env, self.world, self.policy = env, world, policy
        self.task_queue = f"tq-{uuid.uuid4()}"
        self.handle: WorkflowHandle[Any, CustomerState] | None = None

    async def start(self, customer_type: CustomerType = CustomerType.INDIVIDUAL) -> WorkflowHandle[Any, CustomerState]:
        customer_id = str(uuid.uuid4())
        registration = Registration(customer_id=customer_id, email="ada@example.com", customer_type=customer_type)
        self.handle = await self.env.client.start_workflow(
            CustomerWorkflow.run,
            CustomerWorkflowInput(registration=registration, policy=self.policy),
            id=f"customer-{customer_id}",
            task_queue=self.task_queue,
        )
        return self.handle

    async def send(self, *events: KycEvent) -> None:
        assert self.handle is not None
        for e in events:
            await self.handle.signal(CustomerWorkflow.kyc_event, e)

    async def wait_for(self, stage: str, timeout: float = 20.0) -> CustomerState:
        assert self.handle is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.handle.query(CustomerWorkflow.state)
            if state.stage.value == stage:
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never reached {stage}; stage is {state.stage.value}")
            await asyncio.sleep(0.05)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.05)


async def refusal(update: Awaitable[Any]) -> ApplicationError:
    """The ApplicationError an update was refused with (its type is what the API maps to a GraphQL code)."""
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await update
    assert isinstance(failed.value.cause, ApplicationError), failed.value.cause
    return failed.value.cause


async def applied(handle: WorkflowHandle[Any, CustomerState], sent: KycEvent, timeout: float = 10.0) -> CustomerState:
    """The state once the workflow has handled `sent` (applied or ignored it: its dedupe key is remembered)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while sent.dedupe_key not in (state := await handle.query(CustomerWorkflow.state)).applied_kyc_events:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the workflow never handled {sent.dedupe_key}")
        await asyncio.sleep(0.05)
    return state


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


@pytest_asyncio.fixture
async def case(env: WorkflowEnvironment, world: FakeWorld) -> AsyncIterator[Case]:
    c = Case(env, world, QUIET)
    async with Worker(env.client, task_queue=c.task_queue, workflows=[CustomerWorkflow], activities=world.activities()):
        yield c


async def test_approval_opens_one_account_and_activates(case: Case) -> None:
    await case.start(CustomerType.BANK)
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.SUBMITTED, 1), event(KycEventKind.APPROVED, 2), event(KycEventKind.APPROVED, 2))
    state = await case.wait_for("ONBOARDED")
    assert state.status.value == "ACTIVE" and state.kyc_level.value == "BASIC"
    assert [a.category.value for a in case.world.accounts] == ["INTERBANK"]
    await eventually(lambda: "customer.activated" in case.world.recorded)
    await eventually(lambda: "kyc.event_ignored" in case.world.recorded)  # the duplicate delivery
    assert case.world.recorded[0] == "customer.registered"


async def test_approval_stores_the_verified_profile_before_the_account_opens_retrying_while_sumsub_is_down(
    case: Case,
) -> None:
    case.world.profile_outages = 2
    await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.APPROVED, 2))
    await case.wait_for("KYC_APPROVED")
    assert case.handle is not None
    deadline = asyncio.get_running_loop().time() + 10
    while (retrying := await case.handle.query(CustomerWorkflow.state)).current_step is None:
        assert asyncio.get_running_loop().time() < deadline, "the profile step never showed as current"
        await asyncio.sleep(0.05)
    assert retrying.current_step == "store verified profile from Sumsub"
    assert retrying.stage.value == "KYC_APPROVED" and retrying.status.value == "INACTIVE"
    state = await case.wait_for("ONBOARDED", timeout=30)
    assert state.status.value == "ACTIVE" and state.current_step is None
    assert case.world.calls == ["store_verified_profile", "open_deposit_account"]
    assert case.world.profile_reads[0].applicant_id == "applicant-1"
    await eventually(lambda: "customer.activated" in case.world.recorded)
    verified = case.world.recorded.index("profile.verified")
    assert verified < case.world.recorded.index("customer.activated")
    assert case.world.details[verified] == {"changed_fields": ["personal_info.first_name", "personal_info.last_name"]}


async def test_personal_info_changed_after_activation_reads_the_profile_again_and_a_duplicate_does_not(
    case: Case,
) -> None:
    await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.APPROVED, 2))
    await case.wait_for("ONBOARDED")
    changed = event(KycEventKind.PERSONAL_INFO_CHANGED, 3)
    assert case.handle is not None
    await case.send(changed, changed)
    state = await applied(case.handle, changed)
    await eventually(lambda: case.world.recorded.count("kyc.personal_info_changed") == 1)
    row = case.world.details[case.world.recorded.index("kyc.personal_info_changed")]
    assert row["changed_fields"] == ["personal_info.last_name"]
    await eventually(lambda: "kyc.event_ignored" in case.world.recorded)  # the second delivery
    assert len(case.world.profile_reads) == 2  # activation, then the change; not the duplicate
    assert state.stage.value == "ONBOARDED" and state.status.value == "ACTIVE"
    assert state.last_kyc_event_at == datetime(2026, 1, 1, 12, 2, tzinfo=UTC)  # a re-read is not a verdict


async def test_events_apply_in_created_at_order_and_stale_or_misrouted_ones_change_nothing(case: Case) -> None:
    await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.ON_HOLD, 5))
    on_hold = await case.wait_for("KYC_ON_HOLD")
    await case.send(
        event(KycEventKind.SUBMITTED, 3),  # older than the hold, delivered late
        event(KycEventKind.APPROVED, 6, applicant_id="someone-else"),  # not this customer's applicant
        event(KycEventKind.RESUBMISSION_REQUESTED, 7, comment="blurry"),
    )
    retry = await case.wait_for("KYC_RESUBMISSION_REQUESTED")
    await case.send(event(KycEventKind.APPROVED, 9))
    final = await case.wait_for("ONBOARDED")
    assert on_hold.kyc_status.value == "ON_HOLD"
    assert retry.kyc_status.value == "RESUBMISSION_REQUESTED" and retry.moderation_comment == "blurry"
    assert final.status.value == "ACTIVE" and len(case.world.accounts) == 1
    assert case.world.recorded.count("kyc.event_ignored") == 2


def test_audit_rows_that_wait_for_the_next_change_publish_nothing() -> None:
    """A published event carries the state it was recorded with, so its row is never deferred to a later one."""
    from workflows.customer import DEFERRABLE_AUDIT_TYPES

    assert DEFERRABLE_AUDIT_TYPES and all(published_type(t, {}) is None for t in DEFERRABLE_AUDIT_TYPES)


async def test_sumsub_events_queued_while_the_workflow_is_busy_are_recorded_in_one_activity_per_published_change(
    case: Case,
) -> None:
    """Events that publish nothing are written with the next recorded change: every audit row is there, in
    order, each at its own position in the run, in fewer activities (fewer history events per webhook)."""
    world = case.world
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await eventually(lambda: world.recorded[-1:] == ["kyc.started"])
    world.record_gate.clear()
    first = event(KycEventKind.IGNORED, 1)
    await case.send(first)
    await eventually(lambda: world.records_held == 1)  # the workflow is recording `first`
    before, activities_before = len(world.recorded), world.record_activities
    queued = [
        event(KycEventKind.IGNORED, 2),
        event(KycEventKind.IGNORED, 3),
        event(KycEventKind.SUBMITTED, 4),  # published (customer.kyc_submitted): recorded with its own state
        event(KycEventKind.IGNORED, 5),
        event(KycEventKind.IGNORED, 6),
    ]
    await case.send(*queued)
    world.record_gate.set()
    state = await applied(handle, queued[-1])
    await eventually(lambda: len(world.recorded) == before + 6)
    assert state.stage.value == "KYC_IN_REVIEW"
    assert world.recorded[before:] == ["kyc.event_ignored"] * 3 + ["kyc.submitted"] + ["kyc.event_ignored"] * 2
    # `first` alone; the two before the submission with it; the last two together.
    assert world.record_activities - activities_before == 3
    assert world.sequences == list(range(1, len(world.sequences) + 1))


async def test_events_in_one_signal_are_applied_oldest_first_and_recorded_together(case: Case) -> None:
    """The relay's `kyc_events`: a customer's webhooks of one sweep in one signal."""
    world = case.world
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await eventually(lambda: world.recorded[-1:] == ["kyc.started"])
    before, activities_before = len(world.recorded), world.record_activities
    batch = [event(KycEventKind.IGNORED, 3), event(KycEventKind.SUBMITTED, 1), event(KycEventKind.IGNORED, 2)]
    await handle.signal(CustomerWorkflow.kyc_events, batch)
    state = await applied(handle, batch[0])
    await eventually(lambda: len(world.recorded) == before + 3)
    assert state.stage.value == "KYC_IN_REVIEW"
    assert world.recorded[before:] == ["kyc.submitted", "kyc.event_ignored", "kyc.event_ignored"]
    assert world.record_activities - activities_before == 2  # the published one; the two after it together


async def test_reset_goes_back_to_waiting_and_unknown_events_are_recorded_only(case: Case) -> None:
    await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.SUBMITTED, 1))
    await case.wait_for("KYC_IN_REVIEW")
    await case.send(event(KycEventKind.IGNORED, 2), event(KycEventKind.RESET, 3))
    state = await case.wait_for("AWAITING_KYC")
    assert state.kyc_status.value == "STARTED"
    await eventually(lambda: case.world.recorded[-2:] == ["kyc.event_ignored", "kyc.reset"])


async def test_final_rejection_declines_disables_the_user_and_keeps_the_customer_closable(case: Case) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.DECLINED, 1))
    declined = await case.wait_for("KYC_DECLINED")
    assert (declined.status.value, declined.kyc_status.value) == ("INACTIVE", "DECLINED")
    await eventually(lambda: case.world.user_enabled == [False])
    assert case.world.accounts == []
    await case.send(event(KycEventKind.APPROVED, 2))  # too late: onboarding ended
    closed = await handle.execute_update(CustomerWorkflow.close, CloseRequest(reason="declined", actor="ops-1"))
    assert closed.stage.value == "CLOSED"
    assert (await handle.result()).stage.value == "CLOSED"
    assert case.world.accounts == [] and case.world.deactivated_applicants == ["applicant-1"]


def override(approve: bool, request_id: str = "req-1") -> KycOverrideRequest:
    """What the API sends once a second compliance officer confirmed (api/compliance.py)."""
    at = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
    return KycOverrideRequest(
        approve=approve,
        request_id=request_id,
        reason="documents checked by hand",
        requested_by="officer-a",
        requested_at=at,
        decided_by="officer-b",
        decided_at=at + timedelta(hours=1),
        actor="compliance-checker",
    )


async def test_a_declined_customer_approved_by_override_activates_and_a_later_verdict_is_only_recorded(
    case: Case,
) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    with pytest.raises(WorkflowUpdateFailedError):  # nothing to override while waiting for a first verdict
        await handle.execute_update(CustomerWorkflow.kyc_override, override(approve=True))
    await case.send(event(KycEventKind.DECLINED, 1))
    await case.wait_for("KYC_DECLINED")
    await eventually(lambda: case.world.user_enabled == [False])
    approved = await handle.execute_update(CustomerWorkflow.kyc_override, override(approve=True))
    assert (approved.kyc_status.value, approved.kyc_decided_by) == ("APPROVED", KycDecidedBy.MANUAL_OVERRIDE)
    state = await case.wait_for("ONBOARDED")
    assert (state.status.value, state.kyc_level.value) == ("ACTIVE", "BASIC")
    assert case.world.user_enabled == [False, True] and len(case.world.accounts) == 1
    index = case.world.recorded.index("kyc.override_approved")
    details = case.world.details[index]
    assert (details["requested_by"], details["decided_by"], details["reason"]) == (
        "officer-a",
        "officer-b",
        "documents checked by hand",
    )
    assert details["requested_at"] and details["decided_at"] and case.world.actors[index] == "compliance-checker"
    # Sumsub's later RED review does not undo the override: recorded for ops, the customer stays ACTIVE.
    late = event(KycEventKind.DECLINED, 30)
    await case.send(late)
    after = await applied(handle, late)
    assert (after.status.value, after.kyc_status.value) == ("ACTIVE", "APPROVED")
    await eventually(lambda: "kyc.event_ignored" in case.world.recorded)  # its audit row is written after
    ignored = [d for t, d in zip(case.world.recorded, case.world.details, strict=True) if t == "kyc.event_ignored"]
    assert ignored and ignored[-1]["ignored"] == kyc_rules.AFTER_OVERRIDE


async def test_a_declining_override_suspends_an_active_customer_and_an_approving_one_lifts_it(case: Case) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.APPROVED, 1))
    await case.wait_for("ONBOARDED")
    declined = await handle.execute_update(CustomerWorkflow.kyc_override, override(approve=False))
    assert (declined.status.value, declined.kyc_status.value) == ("SUSPENDED", "DECLINED")
    assert (
        declined.suspension_reason == "kyc_override_declined"
        and declined.kyc_decided_by is KycDecidedBy.MANUAL_OVERRIDE
    )
    assert declined.deposit_account is not None and declined.deposit_account.status.value == "FROZEN"
    lifted = await handle.execute_update(CustomerWorkflow.kyc_override, override(approve=True, request_id="req-2"))
    assert (lifted.status.value, lifted.kyc_status.value, lifted.suspension_reason) == ("ACTIVE", "APPROVED", None)


async def test_an_override_failing_half_way_leaves_sumsub_in_charge_and_the_same_request_applies_once_later(
    case: Case,
) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.APPROVED, 1))
    await case.wait_for("ONBOARDED")
    case.world.keycloak_refuses = True  # disabling the sign-in is refused for good: the update fails
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(CustomerWorkflow.kyc_override, override(approve=False))
    failed = await handle.query(CustomerWorkflow.state)
    # Not decided by the override: a later Sumsub verdict still applies, and the request may be applied again.
    assert (failed.kyc_status.value, failed.kyc_decided_by) == ("APPROVED", KycDecidedBy.SUMSUB)
    assert "kyc.override_declined" not in case.world.recorded
    case.world.keycloak_refuses = False
    declined = await handle.execute_update(CustomerWorkflow.kyc_override, override(approve=False))
    assert (declined.status.value, declined.kyc_status.value) == ("SUSPENDED", "DECLINED")
    assert declined.kyc_decided_by is KycDecidedBy.MANUAL_OVERRIDE
    # The API confirming again after a lost answer: the same request id answers with the state, changing nothing.
    again = await handle.execute_update(CustomerWorkflow.kyc_override, override(approve=False))
    assert (again.status.value, again.kyc_status.value) == ("SUSPENDED", "DECLINED")
    assert case.world.recorded.count("kyc.override_declined") == 1 and case.world.user_enabled.count(False) == 1


async def test_permanent_failure_compensates_in_reverse_order_and_ops_can_retry(case: Case) -> None:
    case.world.kyc_link_rejected = True
    handle = await case.start()
    failed = await case.wait_for("FAILED")
    assert failed.last_error is not None and failed.last_error.startswith("SumsubRejected")
    assert case.world.deactivated_applicants == ["applicant-1"] and case.world.deleted_users == ["kc-user-1"]
    assert failed.keycloak_user_id is None
    await eventually(lambda: case.world.recorded[-1] == "onboarding.failed")

    case.world.kyc_link_rejected = False
    retried = await handle.execute_update(CustomerWorkflow.retry_onboarding, RetryOnboardingRequest(actor="ops-1"))
    assert retried.last_error is None
    await case.wait_for("AWAITING_KYC")


async def test_keycloak_user_of_another_customer_fails_without_touching_it(case: Case) -> None:
    case.world.keycloak_conflict = True
    await case.start()
    failed = await case.wait_for("FAILED")
    assert failed.last_error is not None and failed.last_error.startswith("KeycloakUserConflict")
    assert case.world.deleted_users == [] and case.world.deactivated_applicants == []


async def test_suspend_reactivate_close_and_illegal_transitions_are_refused(case: Case) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    refused = await refusal(
        handle.execute_update(CustomerWorkflow.suspend, SuspendRequest(reason="fraud", actor="ops-1"))
    )
    assert (refused.type, refused.message) == (
        ErrorType.ILLEGAL_TRANSITION,
        "cannot suspend a customer whose status is INACTIVE",
    )
    blank = await refusal(handle.execute_update(CustomerWorkflow.suspend, SuspendRequest(reason=" ", actor="ops-1")))
    assert (blank.type, blank.message) == (ErrorType.INVALID_INPUT, "a reason is required")
    await case.send(event(KycEventKind.APPROVED, 1))
    await case.wait_for("ONBOARDED")
    refused = await refusal(handle.execute_update(CustomerWorkflow.reactivate, ReactivateRequest(actor="ops-1")))
    assert (refused.type, refused.message) == (
        ErrorType.ILLEGAL_TRANSITION,
        "cannot reactivate a customer whose status is ACTIVE",
    )
    assert case.world.account_statuses == [] and case.world.user_enabled == []  # the refusals changed nothing

    suspended = await handle.execute_update(
        CustomerWorkflow.suspend, SuspendRequest(reason="fraud check", actor="ops-1")
    )
    assert (suspended.status.value, suspended.suspension_reason) == ("SUSPENDED", "fraud check")
    active = await handle.execute_update(CustomerWorkflow.reactivate, ReactivateRequest(actor="ops-2"))
    assert active.status.value == "ACTIVE"
    closed = await handle.execute_update(CustomerWorkflow.close, CloseRequest(reason="customer left", actor="ops-1"))
    assert (closed.status.value, closed.stage.value) == ("INACTIVE", "CLOSED")
    assert case.world.account_statuses == ["FROZEN", "ACTIVE", "CLOSED"]
    assert case.world.user_enabled == [False, True, False]
    assert (await handle.result()).stage.value == "CLOSED"
    assert {"ops-1", "ops-2"} <= set(case.world.actors)


async def test_a_red_review_after_approval_suspends_and_only_a_green_lifts_that_suspension(case: Case) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.APPROVED, 1))
    await case.wait_for("ONBOARDED")
    await case.send(event(KycEventKind.DECLINED, 2))
    for _ in range(100):
        state = await handle.query(CustomerWorkflow.state)
        if state.status.value == "SUSPENDED":
            break
        await asyncio.sleep(0.05)
    assert state.suspension_reason == "kyc_review_declined"
    await case.send(event(KycEventKind.APPROVED, 3))
    for _ in range(100):
        state = await handle.query(CustomerWorkflow.state)
        if state.status.value == "ACTIVE":
            break
        await asyncio.sleep(0.05)
    assert state.status.value == "ACTIVE" and state.suspension_reason is None

    await handle.execute_update(CustomerWorkflow.suspend, SuspendRequest(reason="sanctions", actor="ops-1"))
    # A RED then a GREEN review while ops hold the suspension: the GREEN is applied (KYC is APPROVED again)
    # but lifts only a suspension a RED review caused, not this one.
    green = event(KycEventKind.APPROVED, 5)
    await case.send(event(KycEventKind.DECLINED, 4), green)
    state = await applied(handle, green)
    assert state.kyc_status.value == "APPROVED"
    assert (state.status.value, state.suspension_reason) == ("SUSPENDED", "sanctions")


async def test_reminders_until_expiry_then_expired_with_user_disabled_and_applicant_deactivated(
    env: WorkflowEnvironment, world: FakeWorld
) -> None:
    policy = OnboardingPolicy(
        reminders_after=[timedelta(seconds=1), timedelta(seconds=2)],
        expires_after=timedelta(seconds=3),
        status_poll_interval=timedelta(hours=1),
    )
    case = Case(env, world, policy)
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        await case.start()
        expired = await case.wait_for("EXPIRED")
        await eventually(lambda: world.recorded[-1] == "kyc.expired")
    assert [n.details["number"] for n in world.notifications] == [1, 2]
    assert world.recorded.count("kyc.reminder_sent") == 2 and world.recorded[-1] == "kyc.expired"
    assert expired.status.value == "INACTIVE" and world.user_enabled == [False]
    assert world.deactivated_applicants == ["applicant-1"]


async def test_no_reminder_once_the_customer_has_submitted(env: WorkflowEnvironment, world: FakeWorld) -> None:
    # The status poll comes a second after the reminder would have: once it has run, the workflow has been
    # awake past the reminder's time and sent none.
    policy = OnboardingPolicy(
        reminders_after=[timedelta(seconds=1)],
        expires_after=timedelta(hours=1),
        status_poll_interval=timedelta(seconds=2),
    )
    case = Case(env, world, policy)
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        await case.start()
        await case.wait_for("AWAITING_KYC")
        await case.send(event(KycEventKind.SUBMITTED, 1))
        state = await case.wait_for("KYC_IN_REVIEW")
        await eventually(lambda: world.polls >= 1)
    assert world.notifications == [] and state.next_reminder_at is None


async def test_a_review_whose_webhook_was_lost_is_found_by_polling(env: WorkflowEnvironment, world: FakeWorld) -> None:
    world.polled_review = event(KycEventKind.APPROVED, 30)
    policy = OnboardingPolicy(
        reminders_after=[], expires_after=timedelta(hours=1), status_poll_interval=timedelta(seconds=1)
    )
    case = Case(env, world, policy)
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        await case.start()
        state = await case.wait_for("ONBOARDED")
    assert world.polls >= 1 and state.status.value == "ACTIVE" and len(world.accounts) == 1


async def test_continues_as_new_with_its_state_and_loses_no_event() -> None:
    world = FakeWorld()
    async with await _local_env("--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=60") as small:
        case = Case(small, world, QUIET)
        async with Worker(
            small.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
        ):
            handle = await case.start()
            await case.wait_for("AWAITING_KYC")
            first_run = (await handle.describe()).run_id
            unknown = [
                event(KycEventKind.IGNORED, 0).model_copy(update={"dedupe_key": f"unknown-{i}"}) for i in range(40)
            ]
            await case.send(*unknown)
            await case.send(event(KycEventKind.SUBMITTED, 1), event(KycEventKind.APPROVED, 2))
            state = await case.wait_for("ONBOARDED")
            latest = await small.client.get_workflow_handle(handle.id).describe()
    assert latest.run_id != first_run
    assert state.applicant_id == "applicant-1" and state.kyc_status.value == "APPROVED"
    assert len(world.accounts) == 1
    assert world.recorded.count("kyc.event_ignored") == 40


async def test_a_run_past_its_history_limit_goes_on_as_a_new_one_with_every_event(env: WorkflowEnvironment) -> None:
    """The policy's limit, not only the server's suggestion (4,096 events): a storm into one customer keeps
    each run short enough to replay quickly."""
    world = FakeWorld()
    case = Case(env, world, QUIET.model_copy(update={"history_limit": 80}))
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        handle = await case.start()
        await case.wait_for("AWAITING_KYC")
        first_run = (await handle.describe()).run_id
        unknown = [event(KycEventKind.IGNORED, 0).model_copy(update={"dedupe_key": f"unknown-{i}"}) for i in range(60)]
        await case.send(*unknown)
        await case.send(event(KycEventKind.SUBMITTED, 1), event(KycEventKind.APPROVED, 2))
        state = await case.wait_for("ONBOARDED")
        latest = await env.client.get_workflow_handle(handle.id).describe()
        history = await env.client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
    assert latest.run_id != first_run and len(history.events) < 120
    assert state.kyc_status.value == "APPROVED" and len(world.accounts) == 1
    assert world.recorded.count("kyc.event_ignored") == 60


async def test_email_change_reaches_keycloak_and_sumsub_or_is_reverted_everywhere(case: Case) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    changed = await handle.execute_update(
        CustomerWorkflow.change_email, ChangeEmailRequest(email=" Ada.New@Example.com", actor="ops-1")
    )
    assert changed.registration.email == "ada.new@example.com"
    assert case.world.keycloak_emails == ["ada.new@example.com"] and case.world.sumsub_emails == ["ada.new@example.com"]

    case.world.email_taken_in_keycloak = True
    refused = await refusal(
        handle.execute_update(
            CustomerWorkflow.change_email, ChangeEmailRequest(email="taken@example.com", actor="ops-1")
        )
    )
    assert (refused.type, refused.message) == (ErrorType.EMAIL_CONFLICT, "KeycloakUserConflict: taken")
    state = await handle.query(CustomerWorkflow.state)
    assert state.registration.email == "ada.new@example.com"
    assert case.world.recorded[-1] == "customer.email_change_reverted"


async def test_a_transient_outage_is_retried_and_the_state_names_the_step_being_retried(case: Case) -> None:
    case.world.kyc_link_outages = 2  # fails, retried after 1 s, fails, retried after 2 s, succeeds
    handle = await case.start()
    seen: set[str | None] = set()
    for _ in range(100):
        state = await handle.query(CustomerWorkflow.state)
        seen.add(state.current_step)
        if state.stage.value == "AWAITING_KYC":
            break
        await asyncio.sleep(0.05)
    assert "create KYC link" in seen
    assert state.stage.value == "AWAITING_KYC" and state.current_step is None and case.world.kyc_link_outages == 0


async def test_a_side_effect_refused_for_good_after_onboarding_is_reported_and_the_customer_stays_manageable(
    case: Case,
) -> None:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    case.world.keycloak_refuses = True  # say, the service account lost its manage-users role
    await case.send(event(KycEventKind.DECLINED, 1))
    await eventually(lambda: "step.failed" in case.world.recorded)
    state = await handle.query(CustomerWorkflow.state)
    assert (
        state.stage.value == "KYC_DECLINED" and state.last_error is not None and "KeycloakRejected" in state.last_error
    )
    case.world.keycloak_refuses = False
    closed = await handle.execute_update(CustomerWorkflow.close, CloseRequest(reason="cleanup", actor="ops-1"))
    assert closed.stage.value == "CLOSED"


async def test_an_event_whose_effect_is_refused_for_good_is_recorded_and_the_events_behind_it_still_apply(
    case: Case,
) -> None:
    """The decline changed the state before Keycloak refused to disable the user: its row says so (and publishes
    customer.kyc_declined, last in its batch, after the ignored event before it), and the events of the same
    signal behind it are applied after the failure is reported, not dropped."""
    world = case.world
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await eventually(lambda: world.recorded[-1:] == ["kyc.started"])
    before, activities_before = len(world.recorded), world.record_activities
    world.keycloak_refuses = True
    batch = [
        event(KycEventKind.IGNORED, 1),
        event(KycEventKind.DECLINED, 2),
        event(KycEventKind.IGNORED, 3),
        event(KycEventKind.APPROVED, 4),
    ]
    await handle.signal(CustomerWorkflow.kyc_events, batch)
    state = await applied(handle, batch[-1])
    await eventually(lambda: len(world.recorded) == before + 5)
    assert world.recorded[before:] == [
        "kyc.event_ignored",
        "kyc.declined",
        "step.failed",
        "kyc.event_ignored",
        "kyc.event_ignored",
    ]
    assert world.record_activities - activities_before == 3  # the decline with the row before it; the failure; the rest
    assert state.stage.value == "KYC_DECLINED" and state.last_error is not None
    assert "KeycloakRejected" in state.last_error
    assert all(item.dedupe_key in state.applied_kyc_events for item in batch)
    assert world.sequences == list(range(1, len(world.sequences) + 1))


async def test_polling_the_same_completed_review_again_changes_and_records_nothing(
    env: WorkflowEnvironment, world: FakeWorld
) -> None:
    world.polled_review = event(KycEventKind.RESUBMISSION_REQUESTED, 30, comment="blurry")
    policy = OnboardingPolicy(
        reminders_after=[], expires_after=timedelta(hours=1), status_poll_interval=timedelta(seconds=1)
    )
    case = Case(env, world, policy)
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        await case.start()
        await case.wait_for("KYC_RESUBMISSION_REQUESTED")
        await eventually(lambda: world.polls >= 3)
    assert world.recorded.count("kyc.resubmission_requested") == 1
    assert "kyc.event_ignored" not in world.recorded


# --- KYC level upgrade ---------------------------------------------------------------------------


async def onboarded(case: Case) -> WorkflowHandle[Any, CustomerState]:
    handle = await case.start()
    await case.wait_for("AWAITING_KYC")
    await case.send(event(KycEventKind.APPROVED, 1))
    await case.wait_for("ONBOARDED")
    return handle


def upgrade_of(state: CustomerState) -> Any:
    assert state.kyc_upgrade is not None
    return state.kyc_upgrade


async def test_a_level_upgrade_keeps_the_customer_active_at_basic_until_a_green_at_the_new_level(case: Case) -> None:
    handle = await onboarded(case)
    started = await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="cust-1"))
    upgrade = upgrade_of(started)
    assert (started.status.value, started.kyc_level.value) == ("ACTIVE", "BASIC")
    assert (upgrade.status.value, upgrade.level_name, upgrade.requested_by) == ("STARTED", ADVANCED_LEVEL, "cust-1")
    assert upgrade.verification_url == "https://sumsub.example/websdk/advanced"
    assert [m.level.value for m in case.world.level_moves] == ["ADVANCED"]
    assert case.world.kyc_link_levels == ["BASIC", "ADVANCED"]
    refused = await refusal(
        handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="x"))
    )
    assert refused.type == ErrorType.ILLEGAL_TRANSITION and "already in progress" in refused.message

    submitted = event(KycEventKind.SUBMITTED, 10, level_name=ADVANCED_LEVEL)
    await case.send(submitted)
    pending = await applied(handle, submitted)
    assert (upgrade_of(pending).status.value, pending.kyc_level.value, pending.status.value) == (
        "PENDING",
        "BASIC",
        "ACTIVE",
    )
    green = event(KycEventKind.APPROVED, 11, level_name=ADVANCED_LEVEL)
    await case.send(green)
    advanced = await applied(handle, green)
    assert (advanced.kyc_level.value, upgrade_of(advanced).status.value, advanced.status.value) == (
        "ADVANCED",
        "APPROVED",
        "ACTIVE",
    )
    assert upgrade_of(advanced).ended_at is not None and upgrade_of(advanced).next_poll_at is None
    await eventually(lambda: "kyc.upgrade_approved" in case.world.recorded)
    upgrade_rows = [t for t in case.world.recorded if t.startswith("kyc.upgrade")]
    assert upgrade_rows == ["kyc.upgrade_started", "kyc.upgrade_submitted", "kyc.upgrade_approved"]
    assert case.world.actors[case.world.recorded.index("kyc.upgrade_started")] == "cust-1"
    highest = await refusal(
        handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="x"))
    )
    assert highest.message == "the customer is at the highest KYC level (ADVANCED)"


async def test_a_red_review_of_the_upgrade_leaves_basic_records_why_and_suspends_nothing(case: Case) -> None:
    handle = await onboarded(case)
    await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="ops"))
    red = event(KycEventKind.DECLINED, 20, comment="document expired", level_name=ADVANCED_LEVEL)
    await case.send(red)
    after = await applied(handle, red)
    upgrade = upgrade_of(after)
    assert (after.status.value, after.kyc_status.value, after.kyc_level.value) == ("ACTIVE", "APPROVED", "BASIC")
    assert (upgrade.status.value, upgrade.moderation_comment, upgrade.reject_labels) == (
        "DECLINED",
        "document expired",
        ["FORGERY"],
    )
    assert case.world.account_statuses == [] and case.world.user_enabled == []  # no suspension
    await eventually(lambda: "kyc.upgrade_declined" in case.world.recorded)
    details = case.world.details[case.world.recorded.index("kyc.upgrade_declined")]
    assert (details["moderation_comment"], details["reject_labels"]) == ("document expired", ["FORGERY"])
    # A declined upgrade may be asked for again.
    again = await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="ops"))
    assert upgrade_of(again).status.value == "STARTED"


async def test_sumsub_refusing_the_level_change_refuses_the_upgrade_and_changes_nothing(case: Case) -> None:
    handle = await onboarded(case)
    case.world.level_move_refused = True
    refused = await refusal(
        handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="o"))
    )
    assert refused.type == ErrorType.ILLEGAL_TRANSITION and "SumsubRejected" in refused.message
    state = await handle.query(CustomerWorkflow.state)
    assert state.kyc_upgrade is None and "kyc.upgrade_started" not in case.world.recorded
    assert case.world.kyc_link_levels == ["BASIC"]


async def test_the_upgrade_is_reminded_polled_and_expires_as_onboarding_does(
    env: WorkflowEnvironment, world: FakeWorld
) -> None:
    # Onboarding is approved at once; then the upgrade waits: a reminder at 1 s, polls every second, expiry at 4 s.
    policy = OnboardingPolicy(
        reminders_after=[timedelta(seconds=1)],
        expires_after=timedelta(seconds=4),
        status_poll_interval=timedelta(seconds=1),
    )
    case = Case(env, world, policy)
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        world.polled_review = event(KycEventKind.APPROVED, 1)  # onboarding's verdict, found by the first poll
        handle = await case.start()
        await case.wait_for("ONBOARDED")
        polls_before = world.polls
        await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="ops"))
        await eventually(lambda: "kyc.upgrade_expired" in world.recorded, timeout=20)
        state = await handle.query(CustomerWorkflow.state)
    assert upgrade_of(state).status.value == "EXPIRED" and state.kyc_level.value == "BASIC"
    assert state.status.value == "ACTIVE"
    reminders = [n for n in world.notifications if n.kind == "kyc_upgrade_reminder"]
    assert [n.details for n in reminders] == [{"number": 1, "level": "ADVANCED"}]
    assert world.polls > polls_before  # the upgrade's review was polled (the same old verdict: nothing applied)
    assert world.recorded.count("kyc.approved") == 1


async def test_a_green_of_the_upgrade_whose_webhook_was_lost_is_found_by_polling(
    env: WorkflowEnvironment, world: FakeWorld
) -> None:
    policy = OnboardingPolicy(
        reminders_after=[], expires_after=timedelta(hours=1), status_poll_interval=timedelta(seconds=1)
    )
    case = Case(env, world, policy)
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        handle = await onboarded(case)
        await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="ops"))
        world.polled_review = event(KycEventKind.APPROVED, 40, level_name=ADVANCED_LEVEL)
        await eventually(lambda: "kyc.upgrade_approved" in world.recorded)
        state = await handle.query(CustomerWorkflow.state)
    assert state.kyc_level.value == "ADVANCED"


async def test_closing_a_customer_cancels_its_upgrade(case: Case) -> None:
    handle = await onboarded(case)
    await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="ops"))
    closed = await handle.execute_update(CustomerWorkflow.close, CloseRequest(reason="customer request", actor="ops"))
    assert (closed.stage.value, upgrade_of(closed).status.value) == ("CLOSED", "CANCELLED")
    assert upgrade_of(closed).next_poll_at is None


async def test_sumsub_not_answering_the_upgrade_is_unavailable_and_changes_nothing(
    env: WorkflowEnvironment, world: FakeWorld
) -> None:
    case = Case(env, world, QUIET.model_copy(update={"activity_retry_budget": timedelta(seconds=2)}))
    async with Worker(
        env.client, task_queue=case.task_queue, workflows=[CustomerWorkflow], activities=world.activities()
    ):
        handle = await onboarded(case)
        world.level_move_down = True
        down = await refusal(
            handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="o"))
        )
        assert down.type == ErrorType.DEPENDENCY_UNAVAILABLE and "Sumsub did not start the upgrade" in down.message
        state = await handle.query(CustomerWorkflow.state)
        assert state.kyc_upgrade is None and "kyc.upgrade_started" not in world.recorded
        world.level_move_down = False  # back: the same request succeeds
        again = await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="o"))
        assert upgrade_of(again).status.value == "STARTED"


async def test_an_upgrade_whose_link_cannot_be_made_is_still_started_and_says_so(case: Case) -> None:
    handle = await onboarded(case)
    case.world.kyc_link_rejected = True
    started = await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="ops"))
    assert (upgrade_of(started).status.value, upgrade_of(started).verification_url) == ("STARTED", None)
    assert started.last_error is not None and started.last_error.startswith("no KYC link for the upgrade")
    assert len(case.world.level_moves) == 1 and "kyc.upgrade_started" in case.world.recorded


async def test_a_suspension_cancels_an_upgrade_and_a_later_green_at_its_level_does_not_raise_the_customer(
    case: Case,
) -> None:
    handle = await onboarded(case)
    await handle.execute_update(CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor="ops"))
    suspended = await handle.execute_update(CustomerWorkflow.suspend, SuspendRequest(reason="fraud check", actor="ops"))
    assert upgrade_of(suspended).status.value == "CANCELLED"
    green = event(KycEventKind.APPROVED, 50, level_name=ADVANCED_LEVEL)
    await case.send(green)
    after = await applied(handle, green)
    assert (after.kyc_level.value, after.status.value) == ("BASIC", "SUSPENDED")
