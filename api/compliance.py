"""Compliance officers' four-eyes requests: KYC overrides (the workflow's `kyc_override` update) and erasure.

The rules (who may confirm, expiry, which customers qualify) are `domain/four_eyes.py`; this is the shell:
PostgreSQL (`db/four_eyes.py`), the audit trail, and the erasure's side effects. Erasure spans systems
that share no transaction, so it runs as idempotent steps after the confirmation commits:

    close the workflow (if open) and wait until it has ended, so nothing writes the customer again
    → delete the Keycloak user → deactivate the Sumsub applicant (Sumsub has no public delete: the audit
    row records that deleting the applicant is the bank's request to make to Sumsub) → delete the
    documents' objects → one PostgreSQL transaction: tombstone every personal value, shred the customer's
    payload key, the `customer.erased` audit row and lifecycle event, the request marked executed.

A step that fails (an outage) answers SERVICE_UNAVAILABLE and leaves the request CONFIRMED and not
executed: confirming it again (any compliance officer) resumes from the start, and every step tolerates
having been done already.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import obstore
import obstore.exceptions
import structlog
from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakError
from obstore.store import S3Store
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

import db.customers
import db.events
import db.four_eyes
from api.errors import BadUserInput, Conflict, NotFound, Unavailable
from api.service import CustomerService
from db.data_keys import DataKeyStore
from db.four_eyes import PendingRequestExists, StoredRequest
from domain import four_eyes
from domain.customer import OnboardingStage, workflow_id_for
from domain.events import CUSTOMER_ERASED, event_data
from domain.four_eyes import FourEyesError, RequestKind, RequestState
from domain.state import CustomerState, KycOverrideRequest
from integrations.sumsub.client import SumsubClient, SumsubError

log = structlog.get_logger("compliance")

ERASED = "[erased]"
WORKFLOW_END_TIMEOUT = timedelta(seconds=30)
# How long a confirmation's claim to carry a request out holds (an erasure takes seconds; a claim this old is
# a process that died mid-way, and another confirmation may resume).
EXECUTION_CLAIM = timedelta(minutes=5)


def erased_email(customer_id: str) -> str:
    """The tombstone of an erased customer's email: unique (the column is), and no one's address."""
    return f"erased-{customer_id}@erased.invalid"


@dataclass(frozen=True)
class Officer:
    subject: str  # the token's `sub`: the four-eyes rule compares these
    actor: str  # what the audit trail names (the client, else the subject)


class ComplianceService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        customers: CustomerService,
        temporal: Client,
        keycloak: KeycloakAdmin,
        sumsub: SumsubClient,
        store: S3Store,
        data_keys: DataKeyStore | None,
        request_expiry: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._customers = customers
        self._temporal = temporal
        self._keycloak = keycloak
        self._sumsub = sumsub
        self._store = store
        self._data_keys = data_keys
        self._expiry = request_expiry
        self._now = clock

    # --- requests -----------------------------------------------------------------------------------

    async def request(self, kind: RequestKind, *, customer_id: str, reason: str, by: Officer) -> StoredRequest:
        now = self._now()
        try:
            request = four_eyes.new_request(
                kind,
                request_id=str(uuid.uuid4()),
                customer_id=customer_id,
                reason=reason,
                by=by.subject,
                now=now,
                expires_after=self._expiry,
            )
        except FourEyesError as exc:
            raise BadUserInput(str(exc), field=exc.field) from None
        async with self._pool.acquire() as conn, conn.transaction():
            state = await db.customers.lock_customer(conn, customer_id)
            if state is None:
                raise NotFound("no customer with this id")
            why = four_eyes.refusal(kind, state.stage, state.kyc_status, erased=state.erased_at is not None)
            if why is not None:
                raise Conflict(why)
            try:
                await db.four_eyes.insert(conn, request, actor=by.actor, now=now)
            except PendingRequestExists as exc:
                raise Conflict(str(exc)) from None
            stored = StoredRequest(
                request=request, requested_by_actor=by.actor, decided_by_actor=None, executed_at=None
            )
            await self._audit(conn, stored, "compliance.request_created", actor=by.actor, at=now)
        log.info("compliance request created", request_id=request.id, kind=kind.value, customer_id=customer_id)
        return stored

    async def reject(self, request_id: str, *, reason: str, by: Officer) -> StoredRequest:
        now = self._now()
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await self._locked(conn, request_id)
            try:
                decided = stored.request.reject(by=by.subject, now=now, reason=reason)
            except four_eyes.InvalidRequest as exc:
                raise BadUserInput(str(exc), field=exc.field) from None
            except FourEyesError as exc:
                raise Conflict(str(exc)) from None
            await db.four_eyes.save_decision(conn, decided, actor=by.actor)
            stored = StoredRequest(decided, stored.requested_by_actor, by.actor, None)
            await self._audit(conn, stored, "compliance.request_rejected", actor=by.actor, at=now)
        return stored

    async def confirm(self, request_id: str, *, by: Officer) -> StoredRequest:
        """Confirms (a different officer) and carries the decision out; a confirmed request whose execution
        was interrupted is resumed by confirming it again, if the customer still qualifies."""
        now = self._now()
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await self._locked(conn, request_id)
            resuming = stored.request.state is RequestState.CONFIRMED and stored.executed_at is None
            if resuming:
                if stored.executing_since is not None and now - stored.executing_since < EXECUTION_CLAIM:
                    raise Conflict(
                        "another confirmation is carrying this request out now; look at it again in a moment"
                    )
                decided = stored.request
            else:
                try:
                    decided = stored.request.confirm(by=by.subject, now=now)
                except FourEyesError as exc:
                    raise Conflict(str(exc)) from None
            state = await db.customers.lock_customer(conn, decided.customer_id)
            assert state is not None  # requests reference their customer
            # An override the workflow applied already (its answer was lost) is only marked executed below.
            applied = decided.kind is not RequestKind.ERASE and decided.id in state.applied_overrides
            why = four_eyes.refusal(decided.kind, state.stage, state.kyc_status, erased=state.erased_at is not None)
            if why is not None and not applied:
                # Also on resuming: the customer may have moved since the confirmation (reactivated, approved).
                raise Conflict(f"the customer no longer qualifies: {why}")
            if not resuming:
                await db.four_eyes.save_decision(conn, decided, actor=by.actor)
                stored = StoredRequest(decided, stored.requested_by_actor, by.actor, None)
                await self._audit(conn, stored, "compliance.request_confirmed", actor=by.actor, at=now)
            if applied:
                await db.four_eyes.mark_executed(conn, decided.id, now)
            else:
                await db.four_eyes.claim_execution(conn, decided.id, now)
        if not applied:
            try:
                if stored.request.kind is RequestKind.ERASE:
                    await self._erase(stored, actor=by.actor)
                else:
                    await self._override(stored, actor=by.actor)
            except BaseException:
                with contextlib.suppress(Exception):  # PostgreSQL down too: the claim runs out (EXECUTION_CLAIM)
                    await db.four_eyes.release_execution(self._pool, request_id)
                raise
        refreshed = await db.four_eyes.get(self._pool, request_id)
        assert refreshed is not None
        return refreshed

    async def get(self, request_id: str) -> StoredRequest | None:
        return await db.four_eyes.get(self._pool, request_id)

    async def for_customer(self, customer_id: str) -> list[StoredRequest]:
        return await db.four_eyes.for_customer(self._pool, customer_id)

    async def _locked(self, conn: Any, request_id: str) -> StoredRequest:
        stored = await db.four_eyes.get(conn, request_id, for_update=True)
        if stored is None:
            raise NotFound("no compliance request with this id")
        return stored

    async def _audit(self, conn: Any, stored: StoredRequest, event_type: str, *, actor: str, at: datetime) -> None:
        await db.customers.append_event(
            conn,
            customer_id=stored.request.customer_id,
            event_type=event_type,
            actor=actor,
            details=db.four_eyes.audit_details(stored),
            occurred_at=at,
            workflow_id=None,
            run_id=None,
            idempotency_key=f"four-eyes:{stored.request.id}:{event_type}",
        )

    # --- KYC override -------------------------------------------------------------------------------

    async def _override(self, stored: StoredRequest, *, actor: str) -> None:
        """The workflow acts as on the matching Sumsub verdict and records both officers (its update's audit
        row); then the request is marked executed."""
        request = stored.request
        assert request.decided_by is not None and request.decided_at is not None
        await self._customers.kyc_override(
            request.customer_id,
            KycOverrideRequest(
                approve=request.kind is RequestKind.OVERRIDE_APPROVE,
                request_id=request.id,
                reason=request.reason,
                requested_by=request.requested_by,
                requested_at=request.requested_at,
                decided_by=request.decided_by,
                decided_at=request.decided_at,
                actor=actor,
            ),
        )
        async with self._pool.acquire() as conn:
            await db.four_eyes.mark_executed(conn, request.id, self._now())

    # --- erasure ------------------------------------------------------------------------------------

    async def _erase(self, stored: StoredRequest, *, actor: str) -> None:
        request = stored.request
        customer_id = request.customer_id
        state = await db.customers.get_customer(self._pool, customer_id)
        assert state is not None
        if state.stage is not OnboardingStage.CLOSED:
            await self._customers.close(customer_id, reason=f"erasure (compliance request {request.id})", actor=actor)
        await self._until_workflow_ended(customer_id)
        state = await db.customers.get_customer(self._pool, customer_id)
        assert state is not None
        await self._step("Keycloak", self._delete_keycloak_user(state.keycloak_user_id))
        await self._step("Sumsub", self._deactivate_applicant(state.applicant_id))
        await self._step("the document store", self._delete_objects(customer_id))
        now = self._now()
        async with self._pool.acquire() as conn, conn.transaction():
            # An upload that passed its checks before the close may write its object after the deletion above: wait
            # for any in flight (its document row's lock, taken before the customer's as uploads do), then delete what
            # is under the prefix once more. No new row can come: the customer is closed (api/documents.py).
            await conn.execute("SELECT 1 FROM customer_documents WHERE customer_id = $1 FOR UPDATE", customer_id)
            locked = await db.customers.lock_customer(conn, customer_id)
            assert locked is not None
            await self._step("the document store", self._delete_objects(customer_id))
            tombstone = _tombstone(locked, now)
            await db.customers.tombstone_customer(conn, tombstone, erased_reason=ERASED)
            shredded = self._data_keys is not None and await self._data_keys.shred(conn, customer_id)
            details = {
                **db.four_eyes.audit_details(stored),
                # The reasons may name the person: the erasure's own are tombstoned like the rest.
                "reason": ERASED,
                "decision_reason": None if stored.request.decision_reason is None else ERASED,
                "keycloak_user_deleted": state.keycloak_user_id,
                "sumsub_applicant_deactivated": state.applicant_id,
                # Sumsub has no public API to delete an applicant: the bank asks Sumsub to, naming this id.
                "sumsub_deletion": "to be requested from Sumsub by the bank" if state.applicant_id else None,
                "payload_key_shredded": shredded,
            }
            await db.customers.append_event(
                conn,
                customer_id=customer_id,
                event_type=CUSTOMER_ERASED,
                actor=actor,
                details=details,
                occurred_at=now,
                workflow_id=None,
                run_id=None,
                idempotency_key=f"four-eyes:{request.id}:{CUSTOMER_ERASED}",
            )
            await db.events.append(
                conn,
                customer_id=customer_id,
                type=CUSTOMER_ERASED,
                time=now,
                data=event_data(tombstone),
                idempotency_key=f"four-eyes:{request.id}:{CUSTOMER_ERASED}",
            )
            await db.four_eyes.mark_executed(conn, request.id, now)
        # A webhook stored while the transaction ran saw neither the tombstone nor the shredded key.
        await db.customers.tombstone_webhooks(self._pool, customer_id, state.applicant_id)
        log.info("customer erased", customer_id=customer_id, request_id=request.id)

    async def _step(self, what: str, step: Awaitable[None]) -> None:
        try:
            await step
        except (KeycloakError, SumsubError, httpx.HTTPError, OSError, obstore.exceptions.BaseError) as exc:
            raise Unavailable(
                f"erasure stopped: {what} could not be reached or refused ({type(exc).__name__}); confirm the"
                " request again to resume"
            ) from exc

    async def _until_workflow_ended(self, customer_id: str) -> None:
        """The closed workflow writes its last change before it ends: only then may the tombstone go in."""
        handle = self._temporal.get_workflow_handle(workflow_id_for(customer_id))
        try:
            await asyncio.wait_for(handle.result(), WORKFLOW_END_TIMEOUT.total_seconds())
        except WorkflowFailureError:
            pass  # ended, if not well: nothing runs any more
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise  # an outage: SERVICE_UNAVAILABLE (api.schema's error mapping)
            # Past Temporal's retention: the workflow and its history are gone already.
        except TimeoutError:
            raise Unavailable("the customer's workflow has not ended yet; confirm the request again") from None

    async def _delete_keycloak_user(self, user_id: str | None) -> None:
        if user_id is None:
            return
        try:
            await self._keycloak.a_delete_user(user_id)
        except KeycloakError as exc:
            if exc.response_code != 404:
                raise

    async def _deactivate_applicant(self, applicant_id: str | None) -> None:
        if applicant_id is None:
            return
        try:
            await self._sumsub.deactivate_applicant(applicant_id)
        except SumsubError as exc:
            if exc.status_code != 404:  # gone at Sumsub already: nothing left to deactivate, as Keycloak's 404
                raise

    async def _delete_objects(self, customer_id: str) -> None:
        prefix = f"customers/{customer_id}/"
        keys = [meta["path"] async for batch in obstore.list(self._store, prefix) for meta in batch]
        for key in keys:
            await obstore.delete_async(self._store, key)


def _tombstone(state: CustomerState, now: datetime) -> CustomerState:
    """The customer after erasure: id, type, statuses, stage, applicant id (the bank's request to Sumsub
    names it) and times; every value a person typed or Sumsub returned is gone."""
    registration = state.registration.model_copy(
        update={
            "email": erased_email(state.customer_id),
            "telegram_handle": None,
            "first_name": None,
            "last_name": None,
            "company_name": None,
        }
    )
    upgrade = state.kyc_upgrade
    return state.model_copy(
        update={
            "registration": registration,
            "kyc_upgrade": None
            if upgrade is None
            else upgrade.model_copy(update={"verification_url": None, "moderation_comment": None}),
            "keycloak_user_id": None,
            "verification_url": None,
            "moderation_comment": None,
            "suspension_reason": None,
            "last_error": None,
            "erased_at": now,
            "updated_at": now,
        }
    )
