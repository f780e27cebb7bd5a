"""CustomerWorkflow: one durable workflow per customer, from registration until the customer is closed.

It reads like the business process: provision the identity, open the KYC case, wait for Sumsub's
verdict (reminding, polling for lost webhooks, expiring), open the deposit account, activate; then
serve ops (suspend, reactivate, close) and later KYC reviews. Every side effect is an activity; every
state change is saved to PostgreSQL (projection + append-only event) through `record_change`.

Declined, expired and failed customers keep their workflow open: ops can still close them, and a
failed onboarding can be retried. Only `close` completes the workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.database import (
        AuditEntry,
        DatabaseActivities,
        OpenDepositAccountInput,
        RecordChangeInput,
        RecordChangesInput,
        SetAccountStatusInput,
    )
    from activities.keycloak import (
        ChangeUserEmailInput,
        KeycloakActivities,
        ProvisionUserInput,
        SetUserEnabledInput,
        UserRef,
    )
    from activities.notifications import Notification, NotificationActivities
    from activities.profiles import ProfileActivities, StoreVerifiedProfileInput
    from activities.sumsub import (
        ApplicantRef,
        ChangeApplicantEmailInput,
        CreateApplicantInput,
        CreateKycLinkInput,
        MoveToLevelInput,
        SumsubActivities,
    )
    from domain import kyc_rules
    from domain.customer import (
        CUSTOMER_TYPES,
        CustomerStatus,
        DepositAccountStatus,
        KycDecidedBy,
        KycLevel,
        KycStatus,
        KycUpgradeStatus,
        OnboardingStage,
        normalise_email,
    )
    from domain.errors import ErrorType
    from domain.four_eyes import OVERRIDE_APPROVABLE_STAGES
    from domain.kyc import KycEvent
    from domain.kyc_rules import KycDecision, KycEffect, TimerDue
    from domain.state import (
        ChangeEmailRequest,
        CloseRequest,
        CustomerState,
        CustomerWorkflowInput,
        KycLevelUpgradeRequest,
        KycOverrideRequest,
        KycUpgrade,
        ReactivateRequest,
        RegisterRequest,
        RetryOnboardingRequest,
        SuspendRequest,
    )
    from domain.transitions import WAITING_FOR_KYC_STAGES, CustomerAction, Step, next_stage, next_step, refusal
    from workflows.visibility import details_markdown, search_attribute_updates

ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# Each call is a few HTTP or SQL round trips (clients time out at 10 s); a crashed attempt is retried after this.
ACTIVITY_ATTEMPT_TIMEOUT = timedelta(seconds=15)

# Patch ids (`workflow.patched`): histories recorded before a change replay without it.
VERIFIED_PROFILE_PATCH = "verified-profile"  # read and store the verified profile before activating
PROFILE_REFRESH_PATCH = "profile-refresh"  # read it again on applicantPersonalInfoChanged
KYC_OVERRIDE_PATCH = "kyc-override"  # the four-eyes KYC override update
KYC_LEVEL_UPGRADE_PATCH = "kyc-level-upgrade"  # the KYC level upgrade update and its review's timers
# Decided once per run: a batch of Sumsub events recorded in one activity, search attributes upserted only when
# they change, and a new run past the policy's history limit.
LEAN_HISTORY_PATCH = "lean-history"
# A Sumsub event whose effect is refused for good (say, its Keycloak user deleted by hand) is still recorded, and
# the events queued behind it stay queued; before it, both were dropped. Decided only when an effect fails.
KYC_EFFECT_REFUSED_PATCH = "kyc-effect-refused"
# Audit rows that may wait for the next recorded change (they publish nothing: tests/test_customer_workflow.py
# checks it). Fixed here, not derived from domain.events, because it decides the workflow's commands: change it
# only under a new patch. At most RECORD_BATCH rows go in one activity (its input stays far below 2 MB).
DEFERRABLE_AUDIT_TYPES = frozenset({"kyc.event_ignored"})
RECORD_BATCH = 200
# Sumsub's answer to an upgrade request is waited for this long (an ops action waits behind it).
UPGRADE_STEP_BUDGET = timedelta(seconds=30)
# A decline by override suspends an active customer; only a later approving override lifts it.
KYC_OVERRIDE_SUSPENSION = "kyc_override_declined"

ActivityInput = TypeVar("ActivityInput")
ActivityResult = TypeVar("ActivityResult")


@workflow.defn
class CustomerWorkflow:
    @workflow.init
    def __init__(self, input: CustomerWorkflowInput) -> None:
        now = workflow.now()
        self._policy = input.policy
        self._state = input.state or CustomerState(registration=input.registration, created_at=now, updated_at=now)
        self._kyc_inbox: list[KycEvent] = list(input.pending_kyc_events)
        self._sequence = 0
        # One change at a time: the main loop and update handlers both change state across activities.
        self._lock = asyncio.Lock()
        # False only where the namespace lacks our custom search attributes (the time-skipping test server).
        self._searchable = input.keep_search_attributes
        self._upgrade_starting = False  # one upgrade request at a time, while Sumsub is asked
        self._lean = False  # LEAN_HISTORY_PATCH, decided when the run starts
        self._unrecorded: list[AuditEntry] = []  # audit rows that go with the next recorded change
        self._search_attributes: list[Any] | None = None  # as last upserted

    # --- messages -----------------------------------------------------------------------------------

    @workflow.update
    def register(self, request: RegisterRequest) -> CustomerState:
        """Registration is idempotent: a repeat gets the customer as it is now."""
        return self._state

    @register.validator
    def _validate_register(self, request: RegisterRequest) -> None:
        # The id was derived from the email, but this customer has since changed theirs: the address
        # is someone else's to register.
        if request.email is not None and request.email != self._state.registration.email:
            raise ApplicationError(
                "this customer now has another email", type=ErrorType.EMAIL_MISMATCH, non_retryable=True
            )

    @workflow.signal
    def kyc_event(self, event: KycEvent) -> None:
        """A Sumsub verification event, delivered from the webhook inbox."""
        self._kyc_inbox.append(event)

    @workflow.signal
    def kyc_events(self, events: list[KycEvent]) -> None:
        """Several of them in one signal (a relay's batch held more than one for this customer): one history
        event and one workflow task instead of one each."""
        self._kyc_inbox.extend(events)

    @workflow.query
    def state(self) -> CustomerState:
        return self._state.model_copy(update={"run_id": workflow.info().run_id})

    @workflow.update
    async def suspend(self, request: SuspendRequest) -> CustomerState:
        async with self._lock:
            self._refuse_unless(CustomerAction.SUSPEND)
            await self._suspend(request.reason, actor=request.actor)
        return self._state

    @suspend.validator
    def _validate_suspend(self, request: SuspendRequest) -> None:
        if not request.reason.strip():
            raise ApplicationError("a reason is required", type=ErrorType.INVALID_INPUT, non_retryable=True)
        self._refuse_unless(CustomerAction.SUSPEND)

    @workflow.update
    async def reactivate(self, request: ReactivateRequest) -> CustomerState:
        async with self._lock:
            self._refuse_unless(CustomerAction.REACTIVATE)
            await self._reactivate(actor=request.actor)
        return self._state

    @reactivate.validator
    def _validate_reactivate(self, request: ReactivateRequest) -> None:
        self._refuse_unless(CustomerAction.REACTIVATE)

    @workflow.update
    async def close(self, request: CloseRequest) -> CustomerState:
        async with self._lock:
            self._refuse_unless(CustomerAction.CLOSE)
            await self._close(request.reason, actor=request.actor)
        return self._state

    @close.validator
    def _validate_close(self, request: CloseRequest) -> None:
        if not request.reason.strip():
            raise ApplicationError("a reason is required", type=ErrorType.INVALID_INPUT, non_retryable=True)
        self._refuse_unless(CustomerAction.CLOSE)

    @workflow.update
    async def retry_onboarding(self, request: RetryOnboardingRequest) -> CustomerState:
        """After FAILED and once the cause is fixed: onboarding starts again from registration."""
        async with self._lock:
            self._refuse_unless(CustomerAction.RETRY_ONBOARDING)
            self._state.last_error = None
            self._move_to(OnboardingStage.REGISTERED)
            await self._record("onboarding.retried", actor=request.actor)
        return self._state

    @retry_onboarding.validator
    def _validate_retry_onboarding(self, request: RetryOnboardingRequest) -> None:
        self._refuse_unless(CustomerAction.RETRY_ONBOARDING)

    @workflow.update
    async def change_email(self, request: ChangeEmailRequest) -> CustomerState:
        """The new email is claimed in PostgreSQL first (unique), then given to Keycloak and Sumsub; if
        either refuses, the customer keeps the old one everywhere."""
        async with self._lock:
            self._refuse_unless(CustomerAction.CHANGE_EMAIL)
            reg = self._state.registration
            old, new = reg.email, normalise_email(request.email)
            if new == old:
                return self._state
            reg.email = new
            try:
                await self._record("customer.email_changed", actor=request.actor)
            except ActivityError as err:
                reg.email = old
                raise ApplicationError(_reason(err), type=ErrorType.EMAIL_CONFLICT, non_retryable=True) from None
            keycloak_changed = False
            try:
                if self._state.keycloak_user_id:
                    await self._step(
                        "change Keycloak user email",
                        KeycloakActivities.change_keycloak_user_email,
                        ChangeUserEmailInput(user_id=self._state.keycloak_user_id, email=new),
                    )
                    keycloak_changed = True
                if self._state.applicant_id:
                    await self._step(
                        "change Sumsub applicant email",
                        SumsubActivities.change_sumsub_applicant_email,
                        ChangeApplicantEmailInput(applicant_id=self._state.applicant_id, email=new),
                    )
            except ActivityError as err:
                reg.email = old
                if keycloak_changed and self._state.keycloak_user_id:
                    await self._step(
                        "restore Keycloak user email",
                        KeycloakActivities.change_keycloak_user_email,
                        ChangeUserEmailInput(user_id=self._state.keycloak_user_id, email=old),
                    )
                await self._record(
                    "customer.email_change_reverted", actor=request.actor, details={"reason": _reason(err)}
                )
                raise ApplicationError(_reason(err), type=ErrorType.EMAIL_CONFLICT, non_retryable=True) from None
        return self._state

    @workflow.update
    async def kyc_override(self, request: KycOverrideRequest) -> CustomerState:
        """A confirmed four-eyes override acts as the matching Sumsub verdict would: approve goes on to the
        profile, the deposit account and ACTIVE (the main loop activates from KYC_APPROVED); decline
        suspends the active customer. Later Sumsub verdicts are recorded and not applied (kyc_rules)."""
        async with self._lock:
            if request.request_id in self._state.applied_overrides:
                return self._state  # a confirmation retried after a lost answer: applied once already
            self._refuse_override(request)
            workflow.patched(KYC_OVERRIDE_PATCH)
            # The outcome (KYC status, decided by) is set only once the side effects succeeded: an update that
            # fails half-way leaves Sumsub in charge, and the same request can be applied again.
            if request.approve and self._state.stage is OnboardingStage.ONBOARDED:
                # Lifts only what a RED review or a declining override suspended, never an ops suspension.
                if self._state.suspension_reason in (kyc_rules.KYC_REVIEW_SUSPENSION, KYC_OVERRIDE_SUSPENSION):
                    await self._reactivate(actor=request.actor)
                self._state.kyc_status = KycStatus.APPROVED
            elif request.approve:
                await self._set_user_enabled(True)  # a decline or expiry disabled the sign-in
                self._state.kyc_status = KycStatus.APPROVED
                self._state.kyc_submitted = True
                self._state.next_reminder_at = self._state.next_poll_at = self._state.expires_at = None
                self._move_to(OnboardingStage.KYC_APPROVED)
            else:
                await self._suspend(KYC_OVERRIDE_SUSPENSION, actor=request.actor)
                self._state.kyc_status = KycStatus.DECLINED
            self._state.kyc_decided_by = KycDecidedBy.MANUAL_OVERRIDE
            self._state.applied_overrides.append(request.request_id)
            await self._record(
                "kyc.override_approved" if request.approve else "kyc.override_declined",
                actor=request.actor,
                details={
                    "request_id": request.request_id,
                    "reason": request.reason,
                    "requested_by": request.requested_by,
                    "requested_at": request.requested_at.isoformat(),
                    "decided_by": request.decided_by,
                    "decided_at": request.decided_at.isoformat(),
                },
            )
        return self._state

    @kyc_override.validator
    def _validate_kyc_override(self, request: KycOverrideRequest) -> None:
        if request.request_id not in self._state.applied_overrides:
            self._refuse_override(request)

    def _refuse_override(self, request: KycOverrideRequest) -> None:
        stage, kyc = self._state.stage, self._state.kyc_status
        onboarded_declined = stage is OnboardingStage.ONBOARDED and kyc is KycStatus.DECLINED
        if request.approve and stage not in OVERRIDE_APPROVABLE_STAGES and not onboarded_declined:
            reason: str | None = f"cannot approve by override in {stage.value}"
        elif not request.approve and not (stage is OnboardingStage.ONBOARDED and kyc is KycStatus.APPROVED):
            reason = f"cannot decline by override in {stage.value} with KYC {kyc.value}"
        else:
            reason = None
        if reason is not None:
            raise ApplicationError(reason, type=ErrorType.ILLEGAL_TRANSITION, non_retryable=True)

    @change_email.validator
    def _validate_change_email(self, request: ChangeEmailRequest) -> None:
        self._refuse_unless(CustomerAction.CHANGE_EMAIL)

    @workflow.update
    async def upgrade_kyc_level(self, request: KycLevelUpgradeRequest) -> CustomerState:
        """Moves the applicant to the next level at Sumsub and opens that level's review. The customer stays
        ACTIVE at its level meanwhile; a GREEN at the new level moves it up, a RED is recorded (kyc_rules).
        Sumsub is asked within UPGRADE_STEP_BUDGET (the lock holds ops actions meanwhile): a refusal is
        ILLEGAL_TRANSITION, no answer DEPENDENCY_UNAVAILABLE, and either leaves nothing changed."""
        async with self._lock:
            self._refuse_upgrade()
            self._upgrade_starting = True
            try:
                workflow.patched(KYC_LEVEL_UPGRADE_PATCH)
                await self._start_upgrade(request)
            finally:
                self._upgrade_starting = False
        return self._state

    async def _start_upgrade(self, request: KycLevelUpgradeRequest) -> None:
        reg, applicant_id = self._state.registration, self._state.applicant_id
        assert applicant_id is not None, "an onboarded customer has an applicant"
        level = kyc_rules.NEXT_LEVEL[self._state.kyc_level]
        budget = min(UPGRADE_STEP_BUDGET, self._policy.activity_retry_budget)
        try:
            level_name = await self._step(
                "move Sumsub applicant to level",
                SumsubActivities.move_sumsub_applicant_to_level,
                MoveToLevelInput(applicant_id=applicant_id, customer_type=reg.customer_type, level=level),
                budget=budget,
            )
        except ActivityError as err:
            refused = isinstance(err.cause, ApplicationError) and err.cause.type == ErrorType.SUMSUB_REJECTED
            raise ApplicationError(
                f"Sumsub did not start the upgrade: {_reason(err)}",
                type=ErrorType.ILLEGAL_TRANSITION if refused else ErrorType.DEPENDENCY_UNAVAILABLE,
                non_retryable=True,
            ) from None
        # The applicant is at the new level now: the upgrade is stored whether or not a link can be made (a
        # fresh one is customerKycLinkCreate's, at the upgrade's level).
        now = workflow.now()
        self._state.kyc_upgrade = kyc_rules.start_upgrade(
            self._state, level_name=level_name, requested_by=request.actor, now=now, policy=self._policy
        )
        try:
            url = await self._step(
                "create KYC link",
                SumsubActivities.create_kyc_link,
                CreateKycLinkInput(customer_id=reg.customer_id, customer_type=reg.customer_type, level=level),
                budget=budget,
            )
            self._state.kyc_upgrade.verification_url = url
        except ActivityError as err:
            self._state.last_error = f"no KYC link for the upgrade: {_reason(err)}"
        await self._record(
            "kyc.upgrade_started", actor=request.actor, details={"level": level.value, "level_name": level_name}
        )

    @upgrade_kyc_level.validator
    def _validate_upgrade_kyc_level(self, request: KycLevelUpgradeRequest) -> None:
        self._refuse_upgrade()

    def _refuse_upgrade(self) -> None:
        reason = "an upgrade is being started" if self._upgrade_starting else kyc_rules.upgrade_refusal(self._state)
        if reason is not None:
            raise ApplicationError(reason, type=ErrorType.ILLEGAL_TRANSITION, non_retryable=True)

    # --- the process --------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: CustomerWorkflowInput) -> CustomerState:
        self._lean = workflow.patched(LEAN_HISTORY_PATCH)
        if input.state is None and not await self._registered():
            # Nothing was created; failing (not completing) lets a later registration start afresh.
            raise ApplicationError(
                self._state.last_error or "registration refused", type=ErrorType.REGISTRATION_REFUSED
            )
        while self._state.stage is not OnboardingStage.CLOSED:
            try:
                await self._next_step()
            except ActivityError as err:
                # A side effect refused for good outside onboarding (say, the Keycloak user was deleted by
                # hand): keep the customer's workflow alive and tell ops, rather than fail it.
                await self._note_failure(err)
            if self._history_too_long():
                await self._continue_as_new(input)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    async def _next_step(self) -> None:
        stage = self._state.stage
        step = next_step(stage)
        if step is Step.OPEN_KYC_CASE:
            async with self._lock:
                if self._state.stage is stage:  # an ops update may have won the lock (close)
                    await self._open_kyc_case()
        elif step is Step.WAIT_FOR_VERDICT:
            await self._wait_for_verdict()
        elif step is Step.ACTIVATE:
            async with self._lock:
                if self._state.stage is stage:
                    await self._activate()
        else:
            await self._serve(stage)

    async def _note_failure(self, err: ActivityError) -> None:
        self._state.last_error = _reason(err)
        self._state.current_step = None
        workflow.logger.error("step failed", extra=self._log_fields(error=self._state.last_error))
        await self._record("step.failed", details={"reason": self._state.last_error})

    async def _registered(self) -> bool:
        """Saves the new customer; an email or telegram handle owned by someone else ends it here."""
        try:
            await self._record("customer.registered", actor="portal")
        except ActivityError as err:
            self._state.last_error = _reason(err)
            self._state.stage = OnboardingStage.FAILED
            workflow.logger.warning("registration refused", extra=self._log_fields(error=self._state.last_error))
            return False
        workflow.logger.info(
            "customer registered", extra=self._log_fields(customer_type=self._state.registration.customer_type.value)
        )
        return True

    async def _open_kyc_case(self) -> None:
        reg = self._state.registration
        try:
            user = await self._step(
                "create Keycloak user",
                KeycloakActivities.provision_keycloak_user,
                ProvisionUserInput(customer_id=reg.customer_id, email=reg.email),
            )
            self._state.keycloak_user_id = user.user_id
            await self._record("identity.provisioned", details={"keycloak_user_id": user.user_id})
            self._state.applicant_id = await self._step(
                "create Sumsub applicant",
                SumsubActivities.create_sumsub_applicant,
                CreateApplicantInput(
                    customer_id=reg.customer_id,
                    customer_type=reg.customer_type,
                    email=reg.email,
                    first_name=reg.first_name,
                    last_name=reg.last_name,
                    company_name=reg.company_name,
                ),
            )
            self._state.verification_url = await self._step(
                "create KYC link",
                SumsubActivities.create_kyc_link,
                CreateKycLinkInput(customer_id=reg.customer_id, customer_type=reg.customer_type),
            )
        except ActivityError as err:
            await self._fail(err)
            return
        now = workflow.now()
        self._state.kyc_status = KycStatus.STARTED
        self._state.kyc_started_at = now
        self._state.expires_at = now + self._policy.expires_after
        self._state.next_poll_at = now + self._policy.status_poll_interval
        self._schedule_next_reminder()
        self._move_to(OnboardingStage.AWAITING_KYC)
        await self._record("kyc.started", details={"applicant_id": self._state.applicant_id})

    async def _wait_for_verdict(self) -> None:
        """Waits for a Sumsub event, the next reminder, the next status poll or expiry, then acts on it."""
        wake_at = kyc_rules.wake_at(self._state)
        stage = self._state.stage
        try:
            await workflow.wait_condition(
                lambda: self._something_to_do(since=stage),
                timeout=max(wake_at - workflow.now(), timedelta(0)),
                timeout_summary=f"wait for KYC review until {wake_at:%Y-%m-%d %H:%M} UTC",
            )
        except TimeoutError:
            pass
        async with self._lock:
            if self._state.stage not in WAITING_FOR_KYC_STAGES:
                return
            if self._kyc_inbox:
                await self._apply_kyc_events()
                return
            due = kyc_rules.timer_due(self._state, workflow.now())
            if due is TimerDue.EXPIRE:
                await self._expire()
            elif due is TimerDue.POLL:
                await self._poll_review()
            elif due is TimerDue.REMIND:
                await self._remind()

    def _something_to_do(self, *, since: OnboardingStage) -> bool:
        """What ends a wait: a Sumsub event, an ops update that moved the stage, or a history to roll over."""
        return bool(self._kyc_inbox) or self._state.stage is not since or self._history_too_long()

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or (
            self._lean and info.get_current_history_length() >= self._policy.history_limit
        )

    async def _serve(self, stage: OnboardingStage) -> None:
        """After onboarding ended (ONBOARDED, or a terminal exit): handle later KYC events until ops act, and
        wait for the review of a KYC level upgrade as onboarding waits for its verdict."""
        upgrade = self._upgrading()
        if upgrade is not None:
            await self._wait_for_upgrade(upgrade)
            return
        latest = self._state.kyc_upgrade  # a new one (the update) ends this wait
        await workflow.wait_condition(
            lambda: self._something_to_do(since=stage) or self._state.kyc_upgrade is not latest
        )
        async with self._lock:
            if self._kyc_inbox:
                await self._apply_kyc_events()

    def _cancel_upgrade(self) -> None:
        upgrade = self._upgrading()
        if upgrade is not None:
            self._state.kyc_upgrade = kyc_rules.upgrade_ended(upgrade, KycUpgradeStatus.CANCELLED, workflow.now())

    def _upgrading(self) -> KycUpgrade | None:
        """The KYC level upgrade in progress, if any (only an onboarded customer has one)."""
        upgrade = self._state.kyc_upgrade
        in_progress = upgrade is not None and upgrade.in_progress
        return upgrade if in_progress and self._state.stage is OnboardingStage.ONBOARDED else None

    async def _wait_for_upgrade(self, upgrade: KycUpgrade) -> None:
        """Waits for a Sumsub event, the upgrade's next reminder, status poll or expiry, then acts on it."""
        wake_at = kyc_rules.wake_at(upgrade)
        stage = self._state.stage
        try:
            await workflow.wait_condition(
                lambda: self._something_to_do(since=stage) or self._state.kyc_upgrade is not upgrade,
                timeout=max(wake_at - workflow.now(), timedelta(0)),
                timeout_summary=f"wait for the KYC upgrade's review until {wake_at:%Y-%m-%d %H:%M} UTC",
            )
        except TimeoutError:
            pass
        async with self._lock:
            if self._kyc_inbox:
                await self._apply_kyc_events()
                return
            if self._upgrading() is not upgrade:
                return
            due = kyc_rules.timer_due(upgrade, workflow.now())
            if due is TimerDue.EXPIRE:
                self._state.kyc_upgrade = kyc_rules.upgrade_ended(upgrade, KycUpgradeStatus.EXPIRED, workflow.now())
                await self._record("kyc.upgrade_expired", details={"level_name": upgrade.level_name})
            elif due is TimerDue.POLL:
                await self._poll_review()
            elif due is TimerDue.REMIND:
                await self._remind_upgrade(upgrade)

    async def _activate(self) -> None:
        reg = self._state.registration
        try:
            if workflow.patched(VERIFIED_PROFILE_PATCH):
                # What Sumsub verified is stored before the account opens; while Sumsub cannot be read
                # the step retries (and shows as the current step), and activation waits for it.
                changed = await self._store_verified_profile(until_done=True)
                await self._record("profile.verified", actor="sumsub", details={"changed_fields": changed})
            self._state.deposit_account = await self._step(
                "open deposit account",
                DatabaseActivities.open_deposit_account,
                OpenDepositAccountInput(
                    customer_id=reg.customer_id,
                    account_id=str(workflow.uuid4()),
                    category=CUSTOMER_TYPES[reg.customer_type].account_category,
                ),
                until_done=True,  # our own database: an outage must not undo an approved customer
            )
        except ActivityError as err:
            await self._fail(err)
            return
        self._state.status = CustomerStatus.ACTIVE
        self._state.kyc_level = KycLevel.BASIC
        self._move_to(OnboardingStage.ONBOARDED)
        account = self._state.deposit_account
        await self._record(
            "customer.activated", details={"deposit_account_id": account.id, "category": account.category.value}
        )

    # --- KYC events ---------------------------------------------------------------------------------

    async def _apply_kyc_events(self) -> None:
        """Applies queued Sumsub events oldest first, as `kyc_rules.decide` says. Duplicates, stale and
        misrouted events change nothing (and are recorded). Once onboarding leaves the waiting stages, the
        rest stay queued for the next step (after activation a RED review suspends)."""
        events, self._kyc_inbox = kyc_rules.oldest_first(self._kyc_inbox), []
        for index, event in enumerate(events):
            waiting = self._state.stage in WAITING_FOR_KYC_STAGES
            decision = kyc_rules.decide(self._state, event)
            event_type, details = decision.audit(event)
            try:
                await self._apply_kyc_decision(decision)
            except ActivityError:
                if workflow.patched(KYC_EFFECT_REFUSED_PATCH):
                    # The event already changed the state: its row (and event) tells the bank so, the rest wait
                    # for the next step, and run() reports the refusal to ops.
                    self._kyc_inbox = events[index + 1 :] + self._kyc_inbox
                    self._state.applied_kyc_events = kyc_rules.remembered(self._state, event)
                    await self._record(event_type, actor="sumsub", details=details)
                raise
            self._state.applied_kyc_events = kyc_rules.remembered(self._state, event)
            if decision.effect is KycEffect.REFRESH_PROFILE and workflow.patched(PROFILE_REFRESH_PATCH):
                details |= await self._refresh_profile()
            leaving = waiting and self._state.stage not in WAITING_FOR_KYC_STAGES
            deferrable = event_type in DEFERRABLE_AUDIT_TYPES and len(self._unrecorded) < RECORD_BATCH - 1
            if self._lean and index < len(events) - 1 and not leaving and deferrable:
                self._record_later(event_type, actor="sumsub", details=details)
            else:
                await self._record(event_type, actor="sumsub", details=details)
            if leaving:
                self._kyc_inbox = events[index + 1 :] + self._kyc_inbox
                return

    async def _apply_kyc_decision(self, decision: KycDecision) -> None:
        """Sets what the decision says, then runs its effect."""
        if decision.upgrade:
            self._apply_upgrade_decision(decision)
            return
        if decision.ignored is not None or decision.kyc_status is None:
            return
        if decision.stage is not None:
            self._move_to(decision.stage)
        self._state.kyc_status = decision.kyc_status
        if decision.kyc_status in (KycStatus.APPROVED, KycStatus.DECLINED):
            self._state.kyc_decided_by = KycDecidedBy.SUMSUB
        self._state.last_kyc_event_at = decision.occurred_at
        self._state.moderation_comment = decision.moderation_comment
        if decision.submitted:
            self._state.kyc_submitted = True
            self._state.next_reminder_at = None
        if decision.effect is KycEffect.END_ONBOARDING:
            await self._end_onboarding()
        elif decision.effect is KycEffect.SUSPEND:
            await self._suspend(kyc_rules.KYC_REVIEW_SUSPENSION, actor="sumsub")
        elif decision.effect is KycEffect.REACTIVATE:
            await self._reactivate(actor="sumsub")

    def _apply_upgrade_decision(self, decision: KycDecision) -> None:
        """Moves the upgrade as its review says; only an approval changes the customer (its level)."""
        upgrade = self._state.kyc_upgrade
        if decision.ignored is not None or decision.upgrade_status is None or upgrade is None:
            return
        self._state.kyc_upgrade = upgrade = kyc_rules.upgrade_after(upgrade, decision, workflow.now())
        self._state.last_kyc_event_at = decision.occurred_at
        if upgrade.status is KycUpgradeStatus.APPROVED:
            self._state.kyc_level = upgrade.level
            workflow.logger.info("KYC level upgraded", extra=self._log_fields(level=upgrade.level.value))

    async def _store_verified_profile(self, *, until_done: bool) -> list[str]:
        """The activity stores the profile in PostgreSQL itself and answers with the names of the fields
        that changed, so no verified personal data enters this workflow's state or history."""
        assert self._state.applicant_id is not None, "KYC was approved, so there is an applicant"
        result = await self._step(
            "store verified profile from Sumsub",
            ProfileActivities.store_verified_profile,
            StoreVerifiedProfileInput(
                customer_id=self._state.customer_id,
                customer_type=self._state.registration.customer_type,
                applicant_id=self._state.applicant_id,
            ),
            until_done=until_done,
        )
        return result.changed_fields

    async def _refresh_profile(self) -> dict[str, Any]:
        """On applicantPersonalInfoChanged: within the retry budget (an outage must not hold ops actions
        for ever); a failure is in the audit row and the next change reads everything again."""
        try:
            return {"changed_fields": await self._store_verified_profile(until_done=False)}
        except ActivityError as err:
            return {"profile_refresh_failed": _reason(err)}

    # --- time ---------------------------------------------------------------------------------------

    def _schedule_next_reminder(self) -> None:
        self._state.next_reminder_at = kyc_rules.next_reminder_at(self._state, self._policy)

    async def _remind(self) -> None:
        self._state.reminders_sent += 1
        self._schedule_next_reminder()
        await self._step(
            "send KYC reminder",
            NotificationActivities.notify_customer,
            Notification(
                customer_id=self._state.customer_id, kind="kyc_reminder", details={"number": self._state.reminders_sent}
            ),
        )
        await self._record("kyc.reminder_sent", details={"number": self._state.reminders_sent})

    async def _poll_review(self) -> None:
        """The safety net: a completed review whose webhook never came is applied as the webhook would be
        (onboarding's review, or the level upgrade's)."""
        next_poll_at = workflow.now() + self._policy.status_poll_interval
        upgrade = self._upgrading()
        if upgrade is not None:
            self._state.kyc_upgrade = upgrade.model_copy(update={"next_poll_at": next_poll_at})
        else:
            self._state.next_poll_at = next_poll_at
        if self._state.applicant_id is None:
            return
        event = await self._step(
            "poll Sumsub review status",
            SumsubActivities.poll_kyc_review,
            ApplicantRef(applicant_id=self._state.applicant_id),
        )
        if event is not None and kyc_rules.is_new_verdict(self._state, event):
            self._kyc_inbox.append(event)
            await self._apply_kyc_events()

    async def _remind_upgrade(self, upgrade: KycUpgrade) -> None:
        sent = upgrade.reminders_sent + 1
        upgrade = upgrade.model_copy(update={"reminders_sent": sent})
        upgrade.next_reminder_at = kyc_rules.next_upgrade_reminder_at(upgrade, self._policy)
        self._state.kyc_upgrade = upgrade
        await self._step(
            "send KYC upgrade reminder",
            NotificationActivities.notify_customer,
            Notification(
                customer_id=self._state.customer_id,
                kind="kyc_upgrade_reminder",
                details={"number": sent, "level": upgrade.level.value},
            ),
        )
        await self._record("kyc.upgrade_reminder_sent", details={"number": sent})

    async def _expire(self) -> None:
        self._move_to(OnboardingStage.EXPIRED)
        await self._end_onboarding()
        await self._deactivate_applicant()
        await self._record("kyc.expired")

    async def _end_onboarding(self) -> None:
        """KYC will not complete: the customer stays INACTIVE and cannot sign in."""
        self._state.next_reminder_at = self._state.next_poll_at = self._state.expires_at = None
        await self._set_user_enabled(False)

    # --- ops actions --------------------------------------------------------------------------------

    def _refuse_unless(self, action: CustomerAction) -> None:
        reason = refusal(action, self._state.status, self._state.stage, self._state.kyc_status)
        if reason is not None:
            raise ApplicationError(reason, type=ErrorType.ILLEGAL_TRANSITION, non_retryable=True)

    async def _suspend(self, reason: str, *, actor: str) -> None:
        await self._set_account_status(DepositAccountStatus.FROZEN)
        await self._set_user_enabled(False)
        self._state.status = CustomerStatus.SUSPENDED
        self._state.suspension_reason = reason
        self._cancel_upgrade()  # an upgrade needs an ACTIVE customer; one may be asked for after reactivation
        workflow.logger.info("customer suspended", extra=self._log_fields(reason=reason, actor=actor))
        await self._record("customer.suspended", actor=actor, details={"reason": reason})

    async def _reactivate(self, *, actor: str) -> None:
        await self._set_account_status(DepositAccountStatus.ACTIVE)
        await self._set_user_enabled(True)
        self._state.status = CustomerStatus.ACTIVE
        self._state.suspension_reason = None
        workflow.logger.info("customer reactivated", extra=self._log_fields(actor=actor))
        await self._record("customer.reactivated", actor=actor)

    async def _close(self, reason: str, *, actor: str) -> None:
        await self._set_account_status(DepositAccountStatus.CLOSED)
        await self._set_user_enabled(False)
        await self._deactivate_applicant()
        self._state.status = CustomerStatus.INACTIVE
        self._state.suspension_reason = None
        self._state.next_reminder_at = self._state.next_poll_at = self._state.expires_at = None
        self._cancel_upgrade()
        self._move_to(OnboardingStage.CLOSED)
        await self._record("customer.closed", actor=actor, details={"reason": reason})

    # --- failure and compensation -------------------------------------------------------------------

    async def _fail(self, err: ActivityError) -> None:
        """A permanent failure: undo what onboarding created, newest first, and stop at FAILED."""
        self._state.last_error = _reason(err)
        try:
            await self._deactivate_applicant()
            if self._state.keycloak_user_id:
                await self._step(
                    "delete Keycloak user",
                    KeycloakActivities.delete_keycloak_user,
                    UserRef(user_id=self._state.keycloak_user_id),
                    until_done=True,
                )
                self._state.keycloak_user_id = None
        except ActivityError as compensation_error:
            # Still FAILED (never a retry loop); ops see both causes and clean up by hand.
            self._state.last_error += f"; compensation failed: {_reason(compensation_error)}"
        self._move_to(OnboardingStage.FAILED)
        workflow.logger.warning("onboarding failed", extra=self._log_fields(error=self._state.last_error))
        await self._record("onboarding.failed", details={"reason": self._state.last_error})

    # --- plumbing -----------------------------------------------------------------------------------

    async def _set_user_enabled(self, enabled: bool) -> None:
        if self._state.keycloak_user_id is not None:
            await self._step(
                "enable Keycloak user" if enabled else "disable Keycloak user",
                KeycloakActivities.set_keycloak_user_enabled,
                SetUserEnabledInput(user_id=self._state.keycloak_user_id, enabled=enabled),
                until_done=True,
            )

    async def _set_account_status(self, status: DepositAccountStatus) -> None:
        if self._state.deposit_account is not None:
            self._state.deposit_account = await self._step(
                f"set deposit account {status.value}",
                DatabaseActivities.set_deposit_account_status,
                SetAccountStatusInput(customer_id=self._state.customer_id, status=status),
                until_done=True,
            )

    async def _deactivate_applicant(self) -> None:
        if self._state.applicant_id is not None:
            await self._step(
                "deactivate Sumsub applicant",
                SumsubActivities.deactivate_sumsub_applicant,
                ApplicantRef(applicant_id=self._state.applicant_id),
                until_done=True,
            )

    def _move_to(self, stage: OnboardingStage) -> None:
        previous = self._state.stage
        self._state.stage = next_stage(previous, stage)
        if self._state.stage is not previous:
            workflow.logger.info(
                "onboarding stage changed",
                extra=self._log_fields(from_stage=previous.value, to_stage=self._state.stage.value),
            )

    def _log_fields(self, **fields: Any) -> dict[str, Any]:
        """`extra` for `workflow.logger` (replay-safe: silent while replaying; it adds workflow and run id):
        the customer id, never contact data, plus the given fields."""
        return {"customer_id": self._state.customer_id, **fields}

    async def _step(
        self,
        summary: str,
        activity: Callable[[Any, ActivityInput], Awaitable[ActivityResult]],
        arg: ActivityInput,
        *,
        until_done: bool = False,
        budget: timedelta | None = None,
    ) -> ActivityResult:
        """Runs one side effect; while it runs (and retries) the state names it as the current step."""
        self._state.current_step = summary
        try:
            return await workflow.execute_activity_method(
                activity, arg, **self._activity_options(summary, until_done=until_done, budget=budget)
            )
        finally:
            self._state.current_step = None

    async def _record(self, event_type: str, *, actor: str = "system", details: dict[str, Any] | None = None) -> None:
        """Saves the state change to PostgreSQL (with the audit rows kept for it) and mirrors it into what ops
        see in the Temporal UI."""
        self._state.updated_at = workflow.now()
        if self._searchable:
            updates = search_attribute_updates(self._state)
            if not self._lean or updates != self._search_attributes:
                workflow.upsert_search_attributes(updates)
                self._search_attributes = updates
        workflow.set_current_details(details_markdown(self._state))
        self._record_later(event_type, actor=actor, details=details)
        entries, self._unrecorded = self._unrecorded, []
        options = self._activity_options(f"record {event_type}", until_done=True)
        if len(entries) > 1:
            changes = RecordChangesInput(state=self._state, entries=entries)
            await workflow.execute_activity_method(DatabaseActivities.record_changes, changes, **options)
            return
        change = RecordChangeInput(
            state=self._state, event_type=event_type, sequence=self._sequence, actor=actor, details=details or {}
        )
        await workflow.execute_activity_method(DatabaseActivities.record_change, change, **options)

    def _record_later(self, event_type: str, *, actor: str, details: dict[str, Any] | None) -> None:
        """Takes the audit row's place in the run now; it is written with the next recorded change (so a batch
        of Sumsub events that publish nothing is one activity, not one each)."""
        self._sequence += 1
        self._unrecorded.append(
            AuditEntry(
                event_type=event_type,
                sequence=self._sequence,
                actor=actor,
                details=details or {},
                occurred_at=workflow.now(),
            )
        )

    def _activity_options(
        self, summary: str, *, until_done: bool = False, budget: timedelta | None = None
    ) -> dict[str, Any]:
        """Onboarding steps retry within the configured budget, then fail (and compensate). Writes to our
        own database and steps that enforce or undo (disable a user, freeze an account, deactivate an
        applicant) retry until they succeed: an outage pauses the customer, it never half-applies them."""
        options: dict[str, Any] = {
            "start_to_close_timeout": ACTIVITY_ATTEMPT_TIMEOUT,
            "retry_policy": ACTIVITY_RETRY,
            "summary": summary,
        }
        if not until_done:
            options["schedule_to_close_timeout"] = budget or self._policy.activity_retry_budget
        return options

    async def _continue_as_new(self, input: CustomerWorkflowInput) -> None:
        """Starts a fresh history with the same state; queued events travel with it."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            CustomerWorkflowInput(
                registration=self._state.registration,
                policy=self._policy,
                state=self._state,
                pending_kyc_events=self._kyc_inbox,
                keep_search_attributes=self._searchable,
            )
        )


def _reason(err: ActivityError) -> str:
    cause = err.cause
    return f"{cause.type}: {cause.message}" if isinstance(cause, ApplicationError) else str(cause or err)
