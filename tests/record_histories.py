"""Records the event history of each workflow path as a JSON fixture for the replay test.

Run to add a path (names select which to record; none: all):
    .venv/bin/python -m tests.record_histories [name ...]
Never re-record to make a failing replay pass: that failure means running workflows would break.
An existing file is never overwritten (histories recorded before a change are what prove that running
workflows still replay); add a new name for a new path.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path

from temporalio.worker import Worker

from tests import test_customer_workflow as paths
from tests.test_delivery_workflow import rounds_then_gone
from workflows.customer import CustomerWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
PATHS = {
    "approved": paths.test_approval_opens_one_account_and_activates,
    "resubmission_then_approved": paths.test_events_apply_in_created_at_order_and_stale_or_misrouted_ones_change_nothing,
    "reset": paths.test_reset_goes_back_to_waiting_and_unknown_events_are_recorded_only,
    "declined_then_closed": paths.test_final_rejection_declines_disables_the_user_and_keeps_the_customer_closable,
    "failed_compensated_retried": paths.test_permanent_failure_compensates_in_reverse_order_and_ops_can_retry,
    "suspend_reactivate_close": paths.test_suspend_reactivate_close_and_illegal_transitions_are_refused,
    "red_review_after_approval": paths.test_a_red_review_after_approval_suspends_and_only_a_green_lifts_that_suspension,
    "reminded_then_expired": paths.test_reminders_until_expiry_then_expired_with_user_disabled_and_applicant_deactivated,
    "approved_by_polling": paths.test_a_review_whose_webhook_was_lost_is_found_by_polling,
    "email_changed_then_reverted": paths.test_email_change_reaches_keycloak_and_sumsub_or_is_reverted_everywhere,
    "approved_with_verified_profile": (
        paths.test_approval_stores_the_verified_profile_before_the_account_opens_retrying_while_sumsub_is_down
    ),
    "personal_info_changed_after_activation": (
        paths.test_personal_info_changed_after_activation_reads_the_profile_again_and_a_duplicate_does_not
    ),
    "declined_then_approved_by_override": (
        paths.test_a_declined_customer_approved_by_override_activates_and_a_later_verdict_is_only_recorded
    ),
    "kyc_level_upgraded": paths.test_a_level_upgrade_keeps_the_customer_active_at_basic_until_a_green_at_the_new_level,
    "kyc_level_upgrade_declined_then_asked_again": (
        paths.test_a_red_review_of_the_upgrade_leaves_basic_records_why_and_suspends_nothing
    ),
    "kyc_level_upgrade_reminded_polled_expired": paths.test_the_upgrade_is_reminded_polled_and_expires_as_onboarding_does,
    # LEAN_HISTORY_PATCH: queued events that publish nothing recorded with the next change.
    "kyc_events_recorded_in_batches": (
        paths.test_sumsub_events_queued_while_the_workflow_is_busy_are_recorded_in_one_activity_per_published_change
    ),
    "kyc_events_in_one_signal": paths.test_events_in_one_signal_are_applied_oldest_first_and_recorded_together,
    # Recorded before KYC_EFFECT_REFUSED_PATCH: the refused event's row and the rest of its batch were dropped.
    "side_effect_refused_after_onboarding": (
        paths.test_a_side_effect_refused_for_good_after_onboarding_is_reported_and_the_customer_stays_manageable
    ),
    # KYC_EFFECT_REFUSED_PATCH: the refused event recorded, the events behind it applied after the failure.
    "kyc_effect_refused_in_a_batch": (
        paths.test_an_event_whose_effect_is_refused_for_good_is_recorded_and_the_events_behind_it_still_apply
    ),
}

# EventDeliveryWorkflow's paths: each scenario runs its own worker and returns the workflow's handle.
DELIVERY_PATHS = {
    "event_delivery_rounds": rounds_then_gone,
}


async def main(names: list[str]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    async with await paths._local_env() as env:
        for name, delivery_scenario in DELIVERY_PATHS.items():
            if (names and name not in names) or (HISTORIES / f"{name}.json").exists():
                continue
            history = await (await delivery_scenario(env, f"record-{name}")).fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events")
        for name, scenario in PATHS.items():
            if names and name not in names:
                continue
            if (HISTORIES / f"{name}.json").exists():
                print(f"kept {name}: tests/histories/{name}.json exists (never overwritten)")
                continue
            world = paths.FakeWorld()
            started: list[paths.Case] = []
            original_start = paths.Case.start

            async def remember(self: paths.Case, *args: object, **kwargs: object) -> object:
                started.append(self)  # noqa: B023  (used within this iteration)
                return await original_start(self, *args, **kwargs)  # noqa: B023

            paths.Case.start = remember  # type: ignore[method-assign]
            try:
                if "case" in inspect.signature(scenario).parameters:
                    case = paths.Case(env, world, paths.QUIET)
                    async with Worker(
                        env.client,
                        task_queue=case.task_queue,
                        workflows=[CustomerWorkflow],
                        activities=world.activities(),
                    ):
                        await scenario(case)
                        await asyncio.sleep(1.0)  # let trailing records finish so the history is complete
                else:
                    await scenario(env, world)
            finally:
                paths.Case.start = original_start  # type: ignore[method-assign]
            handle = started[0].handle
            assert handle is not None
            history = await env.client.get_workflow_handle(handle.id).fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
