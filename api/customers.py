"""What the API does with customers: register through the workflow, read live state or the projection."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import BadUserInput, Conflict, NotFound, Unavailable
from lifecycle import db
from lifecycle.config import Settings
from lifecycle.domain import CustomerType, OnboardingStage, mask_email, normalise_email
from lifecycle.models import (
    CustomerState,
    CustomerWorkflowInput,
    OnboardingPolicy,
    RegisterRequest,
    Registration,
    workflow_id_for,
)
from workflows.customer import CustomerWorkflow

# A query is answered by a worker; past this the projection in PostgreSQL answers instead.
QUERY_TIMEOUT = timedelta(seconds=2)
REGISTER_TIMEOUT = timedelta(seconds=10)


def customer_id_for_email(normalised_email: str, secret: str) -> str:
    """A stable id for an email, keyed so it cannot be guessed from the address (a UUIDv8).

    The same email, even registered concurrently, addresses the same workflow, so the workflow id
    conflict policy, not a lock, decides who creates the customer."""
    digest = bytearray(hmac.new(secret.encode(), normalised_email.encode(), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def parse_customer_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadUserInput("customer id must be a UUID", field="id") from None


@dataclass(frozen=True)
class CustomerView:
    state: CustomerState
    workflow_id: str


def onboarding_policy(settings: Settings) -> OnboardingPolicy:
    """The durations a new customer's workflow runs by, fixed when it starts."""
    return OnboardingPolicy(
        reminders_after=settings.kyc_reminders_after,
        expires_after=settings.kyc_expires_after,
        status_poll_interval=settings.kyc_status_poll_interval,
        activity_retry_budget=settings.activity_retry_budget,
    )


class CustomerService:
    def __init__(self, *, pool: asyncpg.Pool, temporal: Client, settings: Settings) -> None:
        self._pool = pool
        self._temporal = temporal
        self._task_queue = settings.temporal_task_queue
        self._id_secret = settings.customer_id_secret
        self._policy = onboarding_policy(settings)

    async def register(self, *, email: str, customer_type: CustomerType, telegram_handle: str | None) -> CustomerView:
        email = normalise_email(email)
        customer_id = await db.find_customer_id(self._pool, email=email) or customer_id_for_email(email, self._id_secret)
        if telegram_handle is not None:
            owner = await db.find_customer_id(self._pool, telegram_handle=telegram_handle)
            if owner is not None and owner != customer_id:
                raise Conflict("telegram handle already belongs to another customer", field="telegramHandle")
        workflow_id = workflow_id_for(customer_id)
        start = WithStartWorkflowOperation(
            CustomerWorkflow.run,
            CustomerWorkflowInput(
                registration=Registration(
                    customer_id=customer_id, email=email, customer_type=customer_type, telegram_handle=telegram_handle
                ),
                policy=self._policy,
            ),
            id=workflow_id,
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A finished customer workflow is never started again by a registration.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"{customer_type.value} customer {mask_email(email)}",
        )
        try:
            state = await self._temporal.execute_update_with_start_workflow(
                CustomerWorkflow.register,
                RegisterRequest(customer_id=customer_id),
                start_workflow_operation=start,
                rpc_timeout=REGISTER_TIMEOUT,
            )
            return CustomerView(state=state, workflow_id=workflow_id)
        except (WorkflowAlreadyStartedError, WorkflowUpdateFailedError, RPCError) as exc:
            stored = await db.get_customer(self._pool, customer_id)
            if stored is not None:
                return CustomerView(state=stored.state, workflow_id=stored.workflow_id)
            raise Unavailable("registration could not be completed now; retry") from exc

    async def get(self, customer_id: str) -> CustomerView | None:
        """Live state from the workflow; the PostgreSQL projection when the workflow is not reachable."""
        workflow_id = workflow_id_for(customer_id)
        try:
            state = await self._temporal.get_workflow_handle(workflow_id).query(
                CustomerWorkflow.state, rpc_timeout=QUERY_TIMEOUT
            )
            return CustomerView(state=state, workflow_id=workflow_id)
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError, TimeoutError):
            stored = await db.get_customer(self._pool, customer_id)
            return None if stored is None else CustomerView(state=stored.state, workflow_id=stored.workflow_id)

    async def act(self, customer_id: str, update: Any, request: Any) -> CustomerView:
        """Runs an ops update on the customer's workflow; a refusal becomes a precise API error."""
        workflow_id = workflow_id_for(customer_id)
        try:
            state = await self._temporal.get_workflow_handle(workflow_id).execute_update(
                update, request, rpc_timeout=REGISTER_TIMEOUT
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "InvalidInput":
                raise BadUserInput(cause.message) from None
            if isinstance(cause, ApplicationError) and cause.type == "IllegalTransition":
                raise Conflict(cause.message) from None
            raise
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise Unavailable("the customer's workflow is not reachable now; retry") from exc
            stored = await db.get_customer(self._pool, customer_id)
            if stored is None:
                raise NotFound("no customer with this id") from None
            if stored.state.stage is OnboardingStage.CLOSED:
                raise Conflict("the customer is closed; no further changes are allowed") from None
            raise Unavailable("the customer's workflow is not running; ops must repair it") from exc
        return CustomerView(state=state, workflow_id=workflow_id)

    async def events(self, customer_id: str) -> list[db.CustomerEvent]:
        return await db.list_events(self._pool, customer_id)
