"""The worker process: runs CustomerWorkflow and every activity, with injected pool and clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from importlib.metadata import version
from pathlib import Path

import structlog
from temporalio import activity, workflow
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import db.pool
from activities.database import DatabaseActivities
from activities.deliveries import DeliveryActivities, DeliveryNotices
from activities.keycloak import KeycloakActivities
from activities.notifications import LogNotifier, NotificationActivities
from activities.profiles import ProfileActivities
from activities.sumsub import SumsubActivities
from db.data_keys import data_key_store
from integrations.event_webhooks import WebhookSender
from integrations.keycloak import keycloak_admin
from integrations.sumsub.client import SumsubClient
from integrations.sumsub.relay import WebhookRelay
from kit import metrics
from kit.logging import ActivityLogContext, configure_logging
from kit.settings import Settings, get_settings
from kit.temporal import connect, ensure_search_attributes
from workers.waker import DeliveryWaker
from workflows.customer import CustomerWorkflow
from workflows.delivery import EventDeliveryWorkflow

log = structlog.get_logger("worker")

EVENT_ROUND_SLOTS = 1000  # delivery rounds one worker runs at once (subscriptions with deliveries in flight)
# Our code, as the build id hashes it: every package of the repository that runs in the worker.
CODE_ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("activities", "db", "domain", "integrations", "kit", "workers", "workflows")


def code_build_id() -> str:
    """The worker's build id (in each workflow task it completes: ops can reset by it): a hash of our sources
    and the SDK's version. The SDK's default hashes the bytecode of every loaded module, compiling each of the
    ~1,500 from source: 1.5 s of CPU at every worker start, on the cores the server and the API share."""
    digest = hashlib.sha256(f"temporalio {version('temporalio')}".encode())
    for package in CODE_PACKAGES:
        for path in sorted((CODE_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(CODE_ROOT)).encode() + b"\0" + path.read_bytes())
    return f"customer-lifecycle-{digest.hexdigest()[:16]}"


def install_temporal_runtime(settings: Settings) -> None:
    """Before any client: the SDK core's own metrics (workflow tasks, activities, polls, ...) in Prometheus
    format, and its log lines through Python logging, so they are JSON and redacted like ours."""
    prometheus = (
        PrometheusConfig(
            bind_address=settings.worker_metrics_address,
            counters_total_suffix=True,
            unit_suffix=True,
            durations_as_seconds=True,
        )
        if settings.worker_metrics_address
        else None
    )
    core_logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    Runtime.set_default(
        Runtime(telemetry=TelemetryConfig(logging=core_logs, metrics=prometheus)), error_if_already_set=False
    )
    # The SDK's workflow and activity details become structured fields (kit.logging), not message text.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False


RELAY_STOP_SECONDS = 10.0


def _relay_ended(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """The relay only ends when told to; if it failed, the worker stops (and is started again) rather than run
    on without delivering webhooks."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("webhook relay failed; stopping the worker", error_type=type(exc).__name__)
        stop.set()


def interceptors(settings: Settings) -> list[Interceptor]:
    chain: list[Interceptor] = [ActivityLogContext()]
    if settings.otel_enabled:
        from kit.tracing import tracing_interceptor

        chain.append(tracing_interceptor("customer-lifecycle-worker"))
    return chain


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL must be set for the worker")
    settings.refuse_dev_secrets()
    install_temporal_runtime(settings)
    await db.pool.migrate(settings.database_url)
    # Each resource is closed (newest first) however far start-up got.
    async with contextlib.AsyncExitStack() as resources:
        pool = await db.pool.create_pool(settings.database_url, size=settings.database_pool_size)
        resources.push_async_callback(pool.close)
        admin = keycloak_admin(settings)
        resources.push_async_callback(admin.connection.aclose)
        # python-keycloak fetches tokens with a second httpx client that conn.aclose() leaves open.
        resources.push_async_callback(admin.connection.keycloak_openid.connection.aclose)
        sumsub = SumsubClient.from_settings(settings)
        resources.push_async_callback(sumsub.aclose)
        if settings.otel_enabled:
            from kit.tracing import shutdown_tracing

            resources.callback(shutdown_tracing)
        data_keys = data_key_store(pool, settings.database_url, settings.payload_encryption_keys)
        if data_keys is not None:
            await data_keys.start()
            resources.push_async_callback(data_keys.aclose)
        client = await connect(settings, data_keys=data_keys)
        await ensure_search_attributes(client, settings.temporal_namespace)
        database, identity, kyc, notifications = (
            DatabaseActivities(pool),
            KeycloakActivities(admin, send_actions_email=settings.keycloak_send_actions_email),
            SumsubActivities(sumsub, settings),
            NotificationActivities(LogNotifier()),
        )
        profiles = ProfileActivities(pool, sumsub)
        build_id = code_build_id()
        worker = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            build_id=build_id,
            workflows=[CustomerWorkflow],
            # A registration answers from its workflow's first task, which waits in the task queue itself, not the
            # worker's sticky queue: as many polls there as on the sticky one.
            max_concurrent_workflow_task_polls=settings.worker_workflow_task_pollers,
            nonsticky_to_sticky_poll_ratio=1.0,
            max_cached_workflows=settings.worker_max_cached_workflows,
            # The sandbox re-imports the workflow module for each new workflow: 40% of this process's CPU under
            # a burst of registrations (py-spy). Tests and the replay test keep it as the determinism guard.
            workflow_runner=SandboxedWorkflowRunner()
            if settings.worker_workflow_sandbox
            else UnsandboxedWorkflowRunner(),
            interceptors=interceptors(settings),
            activities=[
                database.record_change,
                database.record_changes,
                database.open_deposit_account,
                database.set_deposit_account_status,
                identity.provision_keycloak_user,
                identity.set_keycloak_user_enabled,
                identity.delete_keycloak_user,
                identity.change_keycloak_user_email,
                kyc.create_sumsub_applicant,
                kyc.create_kyc_link,
                kyc.move_sumsub_applicant_to_level,
                kyc.deactivate_sumsub_applicant,
                kyc.change_sumsub_applicant_email,
                kyc.poll_kyc_review,
                notifications.notify_customer,
                profiles.store_verified_profile,
            ],
        )
        sender = WebhookSender(settings.event_webhook_policy, timeout=settings.event_delivery_timeout)
        resources.push_async_callback(sender.aclose)
        notices = DeliveryNotices()
        deliveries = DeliveryActivities(
            pool,
            sender,
            source=settings.events_source,
            schedule=settings.event_delivery_retry_schedule,
            disable_after=settings.event_delivery_disable_after,
            notices=notices,
        )
        # Its own task queue: endpoints, however slow, take no slot from a customer's activities.
        events_worker = Worker(
            client,
            task_queue=settings.temporal_events_task_queue,
            build_id=build_id,
            workflows=[EventDeliveryWorkflow],
            interceptors=interceptors(settings),
            activities=[deliveries.deliver_due],
            # A round holds its slot while it lingers (up to 60 s): one per active subscription, all waiting on I/O.
            max_concurrent_activities=EVENT_ROUND_SLOTS,
        )
        # Stored Sumsub webhooks to their customers' workflows (the API only stores them and tells the relays).
        relay = WebhookRelay(
            pool=pool,
            temporal=client,
            event_time_tolerance=settings.sumsub_event_time_tolerance,
            signal_events=settings.sumsub_relay_signal_events,
        )
        waker = DeliveryWaker(
            settings.database_url, client, task_queue=settings.temporal_events_task_queue, notices=notices
        )
        if settings.worker_business_metrics_address:
            server, _thread = metrics.serve_worker_metrics(settings.worker_business_metrics_address)
            resources.push_async_callback(asyncio.to_thread, server.server_close)
            resources.push_async_callback(asyncio.to_thread, server.shutdown)
        async with worker, events_worker:
            waking = asyncio.create_task(waker.run())
            relaying = asyncio.create_task(relay.run(settings.database_url))
            relaying.add_done_callback(lambda task: _relay_ended(task, stop))
            log.info(
                "worker started",
                task_queue=settings.temporal_task_queue,
                build_id=build_id,
                temporal=settings.temporal_address,
                sdk_metrics=settings.worker_metrics_address or None,
                business_metrics=settings.worker_business_metrics_address or None,
                events_task_queue=settings.temporal_events_task_queue,
            )
            try:
                await stop.wait()
            finally:
                waking.cancel()
                relay.stop()  # the drain under way settles what it took, so no row is signalled twice
                await asyncio.wait([relaying], timeout=RELAY_STOP_SECONDS)
                relaying.cancel()
                await asyncio.gather(waking, relaying, return_exceptions=True)
            log.info("worker stopping")


def main() -> None:
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
