"""What the API does with customers, one typed method per operation: register through the workflow,
read the PostgreSQL projection, and run ops changes as the workflow's updates.

The GraphQL resolvers parse input and shape output; everything they do goes through this service, so
they never see the workflow, Temporal or SQL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

import db.customers
import db.profiles
from api.errors import ApiError, BadUserInput, Conflict, NotFound, Unavailable, api_error_for
from domain.customer import (
    CustomerType,
    OnboardingStage,
    mask_email,
    normalise_email,
    workflow_id_for,
)
from domain.errors import ErrorType
from domain.state import (
    ChangeEmailRequest,
    CloseRequest,
    CustomerState,
    CustomerWorkflowInput,
    KycLevelUpgradeRequest,
    KycOverrideRequest,
    OnboardingPolicy,
    ReactivateRequest,
    RegisterRequest,
    Registration,
    RetryOnboardingRequest,
    SuspendRequest,
)
from integrations.sumsub.client import SumsubClient, SumsubError
from kit import metrics
from kit.codec import DataKeyErased
from kit.settings import Settings
from kit.temporal import is_unreachable
from workflows.customer import CustomerWorkflow
from workflows.visibility import initial_search_attributes

# A query (only for a customer the projection does not have yet) is answered by a worker; past this, none.
QUERY_TIMEOUT = timedelta(seconds=2)
REGISTER_TIMEOUT = timedelta(seconds=10)
MAX_PAGE_SIZE = 100
# Stages whose applicant is deactivated (or must not be used): no new verification link.
_NO_VERIFICATION_STAGES = frozenset(
    {OnboardingStage.CLOSED, OnboardingStage.EXPIRED, OnboardingStage.KYC_DECLINED, OnboardingStage.FAILED}
)
_ERASED_EMAIL = (
    "this email belonged to a customer who was erased; a returning data subject is onboarded by ops after a"
    " compliance decision"
)
# How many ids of an email's sequence a registration tries (each skip is an earlier holder who changed email).
ID_ATTEMPTS = 5


def customer_id_for_email(normalised_email: str, secret: str, attempt: int = 0) -> str:
    """A stable id for an email, keyed so it cannot be guessed from the address (a UUIDv8).

    The same email, even registered concurrently, addresses the same workflow, so the workflow id
    conflict policy, not a lock, decides who creates the customer. `attempt` > 0 gives the next id in
    the email's sequence, for when the customer who first held the address has changed it since."""
    name = normalised_email if attempt == 0 else f"{normalised_email}#{attempt}"
    digest = bytearray(hmac.new(secret.encode(), name.encode(), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def parse_customer_id(value: str, *, field: str = "id") -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadUserInput("customer id must be a UUID", field=field) from None


def encode_cursor(key: db.customers.CustomerKey) -> str:
    """An opaque cursor for a place in the customer list: base64 of `created_at|id`."""
    return base64.urlsafe_b64encode(f"{key.created_at.isoformat()}|{key.customer_id}".encode()).decode()


def cursor_for(state: CustomerState) -> str:
    """The cursor of a customer's place in the list."""
    return encode_cursor(db.customers.CustomerKey(state.created_at, state.customer_id))


def decode_cursor(cursor: str, *, field: str = "after") -> db.customers.CustomerKey:
    """The place a cursor from `encode_cursor` names; anything else is the caller's mistake."""
    try:
        created_at, _, customer_id = base64.urlsafe_b64decode(cursor.encode("ascii")).decode().partition("|")
        key = db.customers.CustomerKey(
            created_at=datetime.fromisoformat(created_at), customer_id=str(uuid.UUID(customer_id))
        )
    except (ValueError, binascii.Error, UnicodeError):
        raise BadUserInput("invalid cursor", field=field) from None
    if key.created_at.tzinfo is None:
        raise BadUserInput("invalid cursor", field=field)
    return key


@dataclass(frozen=True)
class ProvidedData:
    """What the registration provided besides email and type (checked by the API's inputs)."""

    first_name: str | None = None
    last_name: str | None = None
    company_name: str | None = None


@dataclass(frozen=True)
class CustomerPage:
    customers: list[CustomerState]
    has_next_page: bool


def onboarding_policy(settings: Settings) -> OnboardingPolicy:
    """The durations a new customer's workflow runs by, fixed when it starts."""
    return OnboardingPolicy(
        reminders_after=settings.kyc_reminders_after,
        expires_after=settings.kyc_expires_after,
        status_poll_interval=settings.kyc_status_poll_interval,
        activity_retry_budget=settings.activity_retry_budget,
    )


class CustomerService:
    def __init__(
        self, *, pool: asyncpg.Pool, temporal: Client, settings: Settings, sumsub: SumsubClient | None = None
    ) -> None:
        """`sumsub` is created from the settings on first use when not given; `aclose()` closes only that one."""
        self._pool = pool
        self._temporal = temporal
        self._settings = settings
        self._task_queue = settings.temporal_task_queue
        self._id_secret = settings.customer_id_secret
        self._policy = onboarding_policy(settings)
        self._sumsub = sumsub
        self._owns_sumsub = sumsub is None

    async def aclose(self) -> None:
        """Closes the Sumsub client this service created (an injected one belongs to its creator)."""
        if self._owns_sumsub and self._sumsub is not None:
            await self._sumsub.aclose()
            self._sumsub = None

    def _sumsub_client(self) -> SumsubClient:
        if self._sumsub is None:
            self._sumsub = SumsubClient.from_settings(self._settings)
        return self._sumsub

    async def register(
        self,
        *,
        email: str,
        customer_type: CustomerType,
        telegram_handle: str | None,
        provided: ProvidedData | None = None,
    ) -> CustomerState:
        """Starts (or finds) the customer's workflow; counted by outcome in `customer_registrations_total`.
        `provided` (names) goes to Sumsub with the applicant; a repeated registration keeps the first."""
        try:
            state = await self._register(
                email=email, customer_type=customer_type, telegram_handle=telegram_handle, provided=provided
            )
        except ApiError as exc:
            metrics.REGISTRATIONS.labels(outcome=exc.code.lower()).inc()
            raise
        except Exception:
            metrics.REGISTRATIONS.labels(outcome="error").inc()
            raise
        metrics.REGISTRATIONS.labels(outcome="ok").inc()
        return state

    async def _register(
        self, *, email: str, customer_type: CustomerType, telegram_handle: str | None, provided: ProvidedData | None
    ) -> CustomerState:
        email = normalise_email(email)
        known = await db.customers.find_customer_id(self._pool, email=email)
        candidates = (
            [known] if known else [customer_id_for_email(email, self._id_secret, n) for n in range(ID_ATTEMPTS)]
        )
        for customer_id in candidates:
            state = await self._register_as(customer_id, email, customer_type, telegram_handle, provided)
            if state is not None:
                return state
        raise Conflict("this email cannot be registered now; ops must look at it", field="email")

    async def _register_as(
        self,
        customer_id: str,
        email: str,
        customer_type: CustomerType,
        telegram_handle: str | None,
        provided: ProvidedData | None = None,
    ) -> CustomerState | None:
        """Registers under `customer_id`; None when that id belongs to a customer with another email."""
        if telegram_handle is not None:
            owner = await db.customers.find_customer_id(self._pool, telegram_handle=telegram_handle)
            if owner is not None and owner != customer_id:
                raise Conflict("telegram handle already belongs to another customer", field="telegramHandle")
        workflow_id = workflow_id_for(customer_id)
        provided = provided or ProvidedData()
        registration = Registration(
            customer_id=customer_id,
            email=email,
            customer_type=customer_type,
            telegram_handle=telegram_handle,
            first_name=provided.first_name,
            last_name=provided.last_name,
            company_name=provided.company_name,
        )
        start = WithStartWorkflowOperation(
            CustomerWorkflow.run,
            CustomerWorkflowInput(registration=registration, policy=self._policy),
            id=workflow_id,
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A closed customer is never started again by a registration; a refused one may be.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=initial_search_attributes(registration),
            static_summary=f"{customer_type.value} customer {mask_email(email)}",
        )
        try:
            state = await self._temporal.execute_update_with_start_workflow(
                CustomerWorkflow.register,
                RegisterRequest(customer_id=customer_id, email=email),
                start_workflow_operation=start,
                rpc_timeout=REGISTER_TIMEOUT,
            )
            return state
        except WorkflowUpdateFailedError as exc:
            if isinstance(exc.cause, ApplicationError) and exc.cause.type == ErrorType.EMAIL_MISMATCH:
                return None
            raise Unavailable("registration could not be completed now; retry") from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            await _settle(start)  # its failed start, else asyncio logs an error for it ("never retrieved")
            raise Unavailable("registration is taking long; retry (it may already be under way)") from exc
        except DataKeyErased:
            # The id is an erased customer's (its key is shredded: nothing can be sealed for it). As for a closed
            # customer, a returning data subject is a compliance decision, never a silent fresh start.
            raise Conflict(_ERASED_EMAIL, field="email") from None
        except (WorkflowAlreadyStartedError, RPCError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not is_unreachable(exc):
                raise
            await _settle(start)
            stored = await db.customers.get_customer(self._pool, customer_id)  # a closed customer's workflow has ended
            if stored is not None and stored.erased_at is not None:
                raise Conflict(_ERASED_EMAIL, field="email") from None
            if stored is not None and stored.registration.email != email:
                return None
            if stored is not None and stored.stage is OnboardingStage.CLOSED:
                # A returning former customer is a compliance decision (why was it closed?), not a
                # registration: nothing is started, and ops decide (README: "A closed customer").
                raise Conflict(
                    "this email belongs to a customer who was closed; a returning customer is onboarded by ops",
                    field="email",
                ) from None
            if stored is not None:
                return stored
            raise Unavailable("registration could not be completed now; retry") from exc

    async def get(self, customer_id: str) -> CustomerState | None:
        """The customer as its last recorded change left it, from the PostgreSQL projection.

        Every change the workflow makes is recorded (`record_change`) before the update that made it
        answers, so a mutation's caller reads its own write. The one thing only the workflow knows is a
        registration whose first record has not committed yet (the `register` update answers from the
        workflow's first task, one activity before the row exists): for an id the projection lacks, the
        workflow is asked, so a customer the portal was just handed is never null."""
        stored = await db.customers.get_customer(self._pool, customer_id)
        if stored is not None:
            return stored
        return await self._live(customer_id)

    async def _live(self, customer_id: str) -> CustomerState | None:
        """The workflow's own state; None when there is no such workflow or it cannot answer now (the
        projection, which has no row, is then the answer)."""
        handle = self._temporal.get_workflow_handle(workflow_id_for(customer_id))
        try:
            # The client retries some failures inside one call: bound the whole call, not each try.
            return await asyncio.wait_for(
                handle.query(CustomerWorkflow.state, rpc_timeout=QUERY_TIMEOUT), QUERY_TIMEOUT.total_seconds()
            )
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError, TimeoutError):
            return None
        except RuntimeError as exc:
            if not is_unreachable(exc):
                raise
            return None

    async def current_step(self, customer_id: str) -> str | None:
        """The side effect the customer's workflow is running or retrying now: not projected, as it changes
        between records (a step retrying through an outage is recorded only when it ends)."""
        state = await self._live(customer_id)
        return None if state is None else state.current_step

    async def suspend(self, customer_id: str, *, reason: str, actor: str) -> CustomerState:
        request = SuspendRequest(reason=_required_reason(reason), actor=actor)
        return await self._update(customer_id, CustomerWorkflow.suspend, request)

    async def reactivate(self, customer_id: str, *, actor: str) -> CustomerState:
        return await self._update(customer_id, CustomerWorkflow.reactivate, ReactivateRequest(actor=actor))

    async def kyc_override(self, customer_id: str, request: KycOverrideRequest) -> CustomerState:
        """A four-eyes override a second compliance officer confirmed (api/compliance.py)."""
        return await self._update(customer_id, CustomerWorkflow.kyc_override, request)

    async def upgrade_kyc_level(self, customer_id: str, *, actor: str) -> CustomerState:
        """Starts the review at the next KYC level; the customer keeps its level until Sumsub approves."""
        return await self._update(customer_id, CustomerWorkflow.upgrade_kyc_level, KycLevelUpgradeRequest(actor=actor))

    async def close(self, customer_id: str, *, reason: str, actor: str) -> CustomerState:
        request = CloseRequest(reason=_required_reason(reason), actor=actor)
        return await self._update(customer_id, CustomerWorkflow.close, request)

    async def retry_onboarding(self, customer_id: str, *, actor: str) -> CustomerState:
        return await self._update(customer_id, CustomerWorkflow.retry_onboarding, RetryOnboardingRequest(actor=actor))

    async def change_email(self, customer_id: str, *, email: str, actor: str) -> CustomerState:
        """Changes the email everywhere (PostgreSQL, Keycloak, Sumsub) or nowhere."""
        request = ChangeEmailRequest(email=email, actor=actor)
        return await self._update(customer_id, CustomerWorkflow.change_email, request)

    async def _update(self, customer_id: str, update: Any, request: Any) -> CustomerState:
        """Runs an ops update on the customer's workflow; a refusal becomes a precise API error."""
        workflow_id = workflow_id_for(customer_id)
        try:
            state: CustomerState = await self._temporal.get_workflow_handle(workflow_id).execute_update(
                update, request, rpc_timeout=REGISTER_TIMEOUT
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                raise api_error_for(cause.type, cause.message) from None
            raise Unavailable(f"the change could not be completed: {cause}") from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise Unavailable("the change was accepted but is taking long; check the customer again") from None
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise Unavailable("the customer's workflow is not reachable now; retry") from exc
            stored = await db.customers.get_customer(self._pool, customer_id)
            if stored is None:
                raise NotFound("no customer with this id") from None
            if stored.stage is OnboardingStage.CLOSED:
                raise Conflict("the customer is closed; no further changes are allowed") from None
            raise Unavailable("the customer's workflow is not running; ops must repair it") from exc
        return state

    async def verified_profile(self, customer_id: str) -> db.profiles.StoredProfile | None:
        """What Sumsub verified (stored by the worker after a GREEN review and on every personal-info
        change); None until then. Callers check who may read it before asking."""
        return await db.profiles.get_profile(self._pool, customer_id)

    async def events(self, customer_id: str) -> list[db.customers.CustomerEvent]:
        return await db.customers.list_events(self._pool, customer_id)

    async def page(
        self,
        filter: db.customers.CustomerFilter,
        *,
        first: int,
        after: db.customers.CustomerKey | None,
        descending: bool,
    ) -> CustomerPage:
        """A page of the PostgreSQL projection (a list cannot query thousands of workflows)."""
        if not 1 <= first <= MAX_PAGE_SIZE:
            raise BadUserInput(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
        rows = await db.customers.list_customers(
            self._pool, filter, after=after, descending=descending, limit=first + 1
        )
        return CustomerPage(customers=rows[:first], has_next_page=len(rows) > first)

    async def get_by_email(self, email: str) -> CustomerState | None:
        """The customer registered with this email in any letter case, from the projection like `get`."""
        return await db.customers.get_customer_by_email(self._pool, normalise_email(email))

    async def create_kyc_link(self, customer_id: str) -> str:
        """A fresh Sumsub WebSDK link for a customer who already has an applicant."""
        state = await self.get(customer_id)
        if state is None:
            raise NotFound("no customer with this id")
        if state.stage in _NO_VERIFICATION_STAGES:
            raise Conflict(f"verification is over for this customer (stage {state.stage.value})")
        if state.stage is OnboardingStage.REGISTERED or state.applicant_id is None:
            raise Conflict("verification has not started yet (no Sumsub applicant); retry shortly")
        upgrade = state.kyc_upgrade
        if upgrade is not None and upgrade.in_progress:
            level = upgrade.level_name  # the customer is verifying for the upgrade's level now
        else:
            level = self._settings.sumsub_level_name(state.registration.customer_type, state.kyc_level)
        try:
            return await self._sumsub_client().create_websdk_link(
                external_user_id=customer_id, level_name=level, ttl_seconds=self._settings.sumsub_websdk_ttl_seconds
            )
        except SumsubError as exc:
            raise Unavailable("Sumsub could not create a verification link now; retry") from exc


def _required_reason(value: str) -> str:
    if not value.strip():
        raise BadUserInput("a reason is required", field="reason")
    return value.strip()


async def _settle(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Collects the start operation's own outcome after a failed update-with-start, so its future's
    exception is retrieved (else asyncio logs "Future exception was never retrieved")."""
    with contextlib.suppress(Exception):
        await start.workflow_handle()
