"""CustomerWorkflow: one durable workflow per customer, from registration to an open deposit account.

It reads like the business process: provision the identity, open the KYC case, wait for Sumsub's
verdict, open the deposit account, activate. Every side effect is an activity; every state change is
saved to PostgreSQL (projection + append-only event) through `record_change`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.database import DatabaseActivities, OpenDepositAccountInput, RecordChangeInput
    from activities.keycloak import KeycloakActivities, ProvisionUserInput, SetUserEnabledInput
    from activities.sumsub import CreateApplicantInput, CreateKycLinkInput, SumsubActivities
    from lifecycle.domain import (
        CUSTOMER_TYPES,
        WAITING_FOR_KYC_STAGES,
        CustomerStatus,
        IllegalTransition,
        KycLevel,
        KycStatus,
        OnboardingStage,
        next_stage,
    )
    from lifecycle.kyc_events import KYC_EVENT_EFFECTS
    from lifecycle.models import CustomerState, CustomerWorkflowInput, KycEvent, RegisterRequest
    from lifecycle.search_attributes import search_attribute_updates

# Transient failures (5xx, timeouts, connection refused) retry with backoff inside this budget.
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
ACTIVITY_ATTEMPT_TIMEOUT = timedelta(seconds=30)
ACTIVITY_BUDGET = timedelta(hours=1)
# Remember this many applied Sumsub deliveries to drop duplicates; older ones are also older by createdAtMs.
_REMEMBERED_EVENTS = 200


@workflow.defn
class CustomerWorkflow:
    @workflow.init
    def __init__(self, input: CustomerWorkflowInput) -> None:
        now = workflow.now()
        self._state = input.state or CustomerState(registration=input.registration, created_at=now, updated_at=now)
        self._kyc_inbox: list[KycEvent] = []
        self._sequence = 0

    @workflow.update
    def register(self, request: RegisterRequest) -> CustomerState:
        """Registration is idempotent: a repeat gets the customer as it is now."""
        return self._state

    @register.validator
    def _validate_register(self, request: RegisterRequest) -> None:
        if request.customer_id != self._state.customer_id:
            raise ValueError("this workflow belongs to another customer")

    @workflow.signal
    def kyc_event(self, event: KycEvent) -> None:
        """A Sumsub verification event, delivered from the API's webhook inbox."""
        self._kyc_inbox.append(event)

    @workflow.query
    def state(self) -> CustomerState:
        return self._state

    @workflow.run
    async def run(self, input: CustomerWorkflowInput) -> CustomerState:
        if self._state.stage is OnboardingStage.REGISTERED:
            await self._record("customer.registered", actor="portal")
            await self._open_kyc_case()
        while self._state.stage in WAITING_FOR_KYC_STAGES:
            await workflow.wait_condition(lambda: bool(self._kyc_inbox))
            await self._apply_kyc_events()
        if self._state.stage is OnboardingStage.KYC_APPROVED:
            await self._activate()
        if self._state.stage is OnboardingStage.KYC_DECLINED:
            await self._set_user_enabled(False)
        return self._state

    # --- onboarding steps ---------------------------------------------------------------------------

    async def _open_kyc_case(self) -> None:
        reg = self._state.registration
        try:
            self._state.keycloak_user_id = await workflow.execute_activity_method(
                KeycloakActivities.provision_keycloak_user,
                ProvisionUserInput(customer_id=reg.customer_id, email=reg.email),
                **self._activity_options("create Keycloak user"),
            )
            await self._record("identity.provisioned", details={"keycloak_user_id": self._state.keycloak_user_id})
            self._state.applicant_id = await workflow.execute_activity_method(
                SumsubActivities.create_sumsub_applicant,
                CreateApplicantInput(customer_id=reg.customer_id, customer_type=reg.customer_type, email=reg.email),
                **self._activity_options("create Sumsub applicant"),
            )
            self._state.verification_url = await workflow.execute_activity_method(
                SumsubActivities.create_kyc_link,
                CreateKycLinkInput(customer_id=reg.customer_id, customer_type=reg.customer_type),
                **self._activity_options("create KYC link"),
            )
        except ActivityError as err:
            await self._fail(err)
            return
        self._state.kyc_status = KycStatus.STARTED
        self._move_to(OnboardingStage.AWAITING_KYC)
        await self._record("kyc.started", details={"applicant_id": self._state.applicant_id})

    async def _apply_kyc_events(self) -> None:
        """Applies queued Sumsub events oldest first; duplicates and stale events change nothing."""
        events, self._kyc_inbox = sorted(self._kyc_inbox, key=lambda e: e.occurred_at), []
        for event in events:
            reason = self._reason_to_ignore(event)
            effect = KYC_EVENT_EFFECTS[event.kind]
            if reason is None and effect is not None:
                kyc_status, stage = effect
                try:
                    self._move_to(stage)
                except IllegalTransition as exc:
                    reason = str(exc)
                else:
                    self._state.kyc_status = kyc_status
                    if event.moderation_comment is not None:
                        self._state.moderation_comment = event.moderation_comment
            self._remember(event)
            details: dict[str, Any] = {"sumsub_type": event.sumsub_type, "kind": event.kind.value}
            if reason is not None:
                details["ignored"] = reason
            elif effect is not None:
                self._state.last_kyc_event_at = event.occurred_at
            await self._record("kyc.event_ignored" if reason else f"kyc.{event.kind.value.lower()}", actor="sumsub", details=details)

    def _reason_to_ignore(self, event: KycEvent) -> str | None:
        if event.dedupe_key in self._state.applied_kyc_events:
            return "duplicate"
        if event.applicant_id and self._state.applicant_id and event.applicant_id != self._state.applicant_id:
            return "applicant id differs from the one on file"
        last = self._state.last_kyc_event_at
        if last is not None and event.occurred_at < last:
            return "older than the newest event applied"
        return None

    def _remember(self, event: KycEvent) -> None:
        self._state.applied_kyc_events = [*self._state.applied_kyc_events, event.dedupe_key][-_REMEMBERED_EVENTS:]

    async def _activate(self) -> None:
        reg = self._state.registration
        try:
            self._state.deposit_account = await workflow.execute_activity_method(
                DatabaseActivities.open_deposit_account,
                OpenDepositAccountInput(
                    customer_id=reg.customer_id,
                    account_id=str(workflow.uuid4()),
                    category=CUSTOMER_TYPES[reg.customer_type].account_category,
                ),
                **self._activity_options("open deposit account"),
            )
        except ActivityError as err:
            await self._fail(err)
            return
        self._state.status = CustomerStatus.ACTIVE
        self._state.kyc_level = KycLevel.BASIC
        self._move_to(OnboardingStage.ONBOARDED)
        await self._record(
            "customer.activated",
            details={"deposit_account_id": self._state.deposit_account.id, "category": self._state.deposit_account.category.value},
        )

    async def _set_user_enabled(self, enabled: bool) -> None:
        if self._state.keycloak_user_id is None:
            return
        await workflow.execute_activity_method(
            KeycloakActivities.set_keycloak_user_enabled,
            SetUserEnabledInput(user_id=self._state.keycloak_user_id, enabled=enabled),
            **self._activity_options("enable Keycloak user" if enabled else "disable Keycloak user"),
        )

    async def _fail(self, err: ActivityError) -> None:
        cause = err.cause
        reason = f"{cause.type}: {cause.message}" if isinstance(cause, ApplicationError) else str(cause or err)
        self._state.last_error = reason
        self._move_to(OnboardingStage.FAILED)
        await self._record("onboarding.failed", details={"reason": reason})

    # --- plumbing ----------------------------------------------------------------------------------

    def _move_to(self, stage: OnboardingStage) -> None:
        self._state.stage = next_stage(self._state.stage, stage)

    async def _record(self, event_type: str, *, actor: str = "system", details: dict[str, Any] | None = None) -> None:
        """Saves the state change to PostgreSQL and mirrors it into the search attributes ops filter on."""
        self._sequence += 1
        self._state.updated_at = workflow.now()
        workflow.upsert_search_attributes(search_attribute_updates(self._state))
        await workflow.execute_activity_method(
            DatabaseActivities.record_change,
            RecordChangeInput(
                state=self._state, event_type=event_type, sequence=self._sequence, actor=actor, details=details or {}
            ),
            **self._activity_options(f"record {event_type}"),
        )

    @staticmethod
    def _activity_options(summary: str) -> dict[str, Any]:
        return {
            "start_to_close_timeout": ACTIVITY_ATTEMPT_TIMEOUT,
            "schedule_to_close_timeout": ACTIVITY_BUDGET,
            "retry_policy": ACTIVITY_RETRY,
            "summary": summary,
        }
