"""The one configuration object: every setting is an environment variable with a documented default.

The defaults describe the local development stack (`make dev`); production sets real URLs and secrets.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.customer import CUSTOMER_TYPES, CustomerType, KycLevel, VerificationFlow
from domain.deliveries import DEFAULT_RETRY_SCHEDULE, UrlPolicy
from domain.kyc_rules import REMEMBERED_EVENTS
from kit.codec import DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS


class Settings(BaseSettings):
    """Service settings, read from the environment (names are the upper-case field names)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Storage
    database_url: str | None = Field(
        default=None, description="PostgreSQL DSN; unset means an embedded server under DATA_DIR."
    )
    data_dir: Path = Field(default=Path(".data"), description="Where the dev stack keeps its state.")
    database_pool_size: int = Field(default=10, description="asyncpg pool size per process.")

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "customer-lifecycle"
    temporal_ui_port: int = 8233
    worker_workflow_sandbox: bool = Field(
        default=False,
        description="Run workflows in the Temporal SDK's sandbox. Off: the sandbox re-imports the workflow module for "
        "every new workflow (under a burst of registrations most of the worker's CPU) and keeps a copy per cached "
        "workflow; the tests run the workflow in it, so non-deterministic code still fails there.",
    )
    worker_workflow_task_pollers: int = Field(
        default=50,
        description="Workflow task polls a worker keeps open, half of them on the task queue that a new customer's first "
        "task waits in (the SDK's 5, one of them there, left a burst of 100 registrations waiting seconds).",
    )
    worker_max_cached_workflows: int = Field(
        default=500,
        ge=0,
        description="Customer workflows a worker keeps in memory (the SDK's sticky cache; its default is 1000), about "
        "127 KB each (430 KB in the sandbox); one evicted replays its history on its next event (a full onboarding's "
        "history about 25 ms). Bounds the worker's memory however many customers wait for KYC; 0: no cache.",
    )
    dev_temporal_port: int = Field(
        default=7233,
        description="gRPC port of the Temporal dev server `make dev` starts (when TEMPORAL_ADDRESS is unset).",
    )

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = Field(
        default=1,
        ge=1,
        description="API processes sharing the port (forked by `python -m api.main`); process i serves its metrics "
        "on API_METRICS_ADDRESS's port + i, and each has its own DATABASE_POOL_SIZE connections.",
    )
    api_graphiql: bool = Field(
        default=False, description="Serve the GraphiQL IDE on GET /graphql and allow introspection (dev only)."
    )
    api_audience: str = Field(
        default="customer-lifecycle-api",
        description="Audience (or azp) an access token must carry to be accepted by the API.",
    )
    api_header_timeout: float = Field(
        default=10.0, description="Seconds a client has to send a request's line and headers; then 408 and closed."
    )
    api_body_timeout: float = Field(
        default=30.0, description="Seconds a client has to send a request's whole body; then 408."
    )
    api_read_cache_customers: int = Field(
        default=10_000,
        ge=0,
        description="Customers whose repeated customer(id) answers each API process keeps while their projection row "
        "is unchanged (api/read_cache.py); 0 turns it off.",
    )
    api_graphql_max_bytes: int = Field(
        default=1024 * 1024, description="Larger POST /graphql bodies are refused with 413 before they are read whole."
    )
    api_graphql_max_depth: int = Field(
        default=10, description="Deepest selection nesting a GraphQL operation may have."
    )
    api_graphql_max_aliases: int = Field(default=30, description="Most aliases one GraphQL document may use.")
    api_graphql_max_tokens: int = Field(default=2000, description="Most lexical tokens one GraphQL document may have.")
    api_graphql_max_cost: int = Field(
        default=25_000,
        description="Most objects one operation may resolve, lists counted at their size (`first`, else their maximum).",
    )
    customer_id_secret: str = Field(
        default="dev-only-customer-id-secret",
        description="HMAC key that derives a customer id from a normalised email (never guessable).",
    )

    # Customer documents (object storage: any S3 API)
    s3_endpoint: str = Field(
        default="http://127.0.0.1:8333",
        description="S3 API endpoint for customer documents; unset in `make dev`: a SeaweedFS server is started.",
    )
    s3_bucket: str = Field(default="customer-documents", description="Bucket holding customer documents.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str = "dev-s3-access-key"
    s3_secret_access_key: str = "dev-s3-secret-key"
    dev_s3_port: int = Field(
        default=8333, description="S3 port of the SeaweedFS server `make dev` starts (when S3_ENDPOINT is unset)."
    )
    document_max_bytes: int = Field(
        default=10 * 1024 * 1024, description="Largest customer document; larger uploads are BAD_USER_INPUT."
    )
    document_content_types: str = Field(
        default="application/pdf,image/png,image/jpeg,text/csv",
        description="Content types a document may have (comma-separated; decided from its bytes).",
    )
    document_link_ttl: timedelta = Field(
        default=timedelta(minutes=5), description="Lifetime of a presigned document download link."
    )
    document_sweep_after: timedelta = Field(
        default=timedelta(minutes=1),
        description="A document still NEW this long after its row was written (its upload died) is finished or cleaned.",
    )

    # Keycloak
    keycloak_url: str = "http://127.0.0.1:8080"
    keycloak_realm: str = "customers"
    dev_keycloak_port: int = Field(
        default=8080, description="Port of the Keycloak emulator `make dev` starts (when KEYCLOAK_URL is unset)."
    )
    keycloak_client_id: str = "customer-lifecycle"
    keycloak_client_secret: str = "customer-lifecycle-dev-secret"
    keycloak_send_actions_email: bool = Field(
        default=False, description="Ask Keycloak to e-mail VERIFY_EMAIL and UPDATE_PASSWORD after provisioning."
    )

    # Sumsub
    sumsub_base_url: str = "http://127.0.0.1:8090"
    dev_sumsub_port: int = Field(
        default=8090, description="Port of the Sumsub emulator `make dev` starts (when SUMSUB_BASE_URL is unset)."
    )
    sumsub_app_token: str = "sbx:dev-app-token"
    sumsub_secret_key: str = "dev-sumsub-secret-key"
    sumsub_webhook_secret: str = "dev-sumsub-webhook-secret"
    sumsub_kyc_level: str = "basic-kyc-level"
    sumsub_kyb_level: str = "basic-kyb-level"
    sumsub_advanced_kyc_level: str = Field(
        default="advanced-kyc-level", description="The level an INDIVIDUAL customer's KYC level upgrade moves to."
    )
    sumsub_advanced_kyb_level: str = Field(
        default="advanced-kyb-level", description="The level an organisation's KYC level upgrade moves to."
    )
    sumsub_websdk_ttl_seconds: int = 7 * 24 * 3600
    sumsub_webhook_max_bytes: int = 256 * 1024
    sumsub_event_time_tolerance: timedelta = Field(
        default=timedelta(minutes=5),
        description="A webhook stamped (createdAtMs) more than this after it was received is ordered by receipt time.",
    )
    sumsub_relay_signal_events: int = Field(
        default=REMEMBERED_EVENTS,
        ge=1,
        le=REMEMBERED_EVENTS,  # a batch signalled again is recognised whole as duplicates
        description="A customer's webhooks one relay signal carries at most (`kyc_events`). 1: a signal each, which "
        "workers older than `kyc_events` understand; set it while upgrading from such a version.",
    )

    # Onboarding policy (durations: seconds or ISO 8601, e.g. P1D)
    kyc_reminders_after: list[timedelta] = Field(
        default=[timedelta(days=1), timedelta(days=3), timedelta(days=7)],
        description="Remind a customer who has not submitted KYC after each of these (JSON list).",
    )
    kyc_expires_after: timedelta = Field(default=timedelta(days=30), description="Give up on KYC after this.")
    four_eyes_request_expiry: timedelta = Field(
        default=timedelta(days=3),
        description="A compliance request (override, erasure) nobody confirmed or rejected by then is EXPIRED.",
    )
    kyc_status_poll_interval: timedelta = Field(
        default=timedelta(hours=6), description="While waiting, ask Sumsub for the review status this often."
    )
    activity_retry_budget: timedelta = Field(
        default=timedelta(hours=1), description="How long a side effect is retried before the step fails."
    )

    # Event webhooks (push delivery of the published lifecycle events)
    temporal_events_task_queue: str = Field(
        default="customer-lifecycle-events",
        description="Task queue of the event delivery workflows (apart, so no endpoint slows onboarding).",
    )
    event_delivery_timeout: float = Field(
        default=5.0, description="Seconds an endpoint has to answer one delivery (connect to last byte)."
    )
    event_delivery_retry_schedule: list[timedelta] = Field(
        default=list(DEFAULT_RETRY_SCHEDULE),
        description="Wait after each failed attempt (JSON list); when spent, the delivery is dead-lettered.",
    )
    event_delivery_disable_after: timedelta = Field(
        default=timedelta(days=5),
        description="A subscription whose endpoint has failed continuously this long is disabled.",
    )
    event_webhook_secret_grace: timedelta = Field(
        default=timedelta(hours=24),
        description="After a secret rotation, deliveries are signed with the old secret too for this long.",
    )
    event_webhook_allow_http: bool = Field(
        default=False, description="Allow plain http endpoint URLs (never in production; `make dev` sets it)."
    )
    event_webhook_allowed_networks: str = Field(
        default="",
        description="Networks (comma-separated CIDRs) endpoints may be in although private, loopback or "
        "link-local; `make dev` allows 127.0.0.0/8 and ::1.",
    )

    # Payload encryption
    payload_encryption_keys: str = Field(
        default=DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS,
        description="`id:base64key,...` (32-byte AES keys), newest first: encrypt with the first, decrypt with any; "
        "empty disables encryption. The default is a public dev-only key. Checked when a process connects to Temporal.",
    )
    temporal_ui_origin: str = Field(
        default="http://127.0.0.1:8233,http://localhost:8233",
        description="The Temporal Web UI's origins (comma-separated), the only ones CORS lets call /codec.",
    )
    codec_auth_required: bool = Field(
        default=True,
        description="/codec answers only bearer tokens with the ops role (false only on a loopback dev stack).",
    )

    dev_secrets_allowed: bool = Field(
        default=False, description="Let the API and worker start with the repository's dev secrets (make dev sets it)."
    )

    # Logging
    log_format: str = Field(default="json", description="json or console.")
    log_level: str = "INFO"

    # Metrics and tracing
    events_source: str = Field(
        default="urn:customer-lifecycle",
        description="The CloudEvents `source` of the published lifecycle events (a URI reference naming this service).",
    )
    api_metrics_address: str = Field(
        default="127.0.0.1:9466",
        description="host:port where the API serves its Prometheus metrics (/metrics), apart from its public port; "
        "empty: off.",
    )
    worker_metrics_address: str = Field(
        default="127.0.0.1:9464",
        description="host:port where the worker serves the Temporal SDK's Prometheus metrics (/metrics); empty: off.",
    )
    worker_business_metrics_address: str = Field(
        default="127.0.0.1:9465",
        description="host:port where the worker serves its business metrics (/metrics); empty: off.",
    )
    otel_enabled: bool = Field(
        default=False, description="Trace workflows and activities with OpenTelemetry (spans logged as JSON lines)."
    )

    def refuse_dev_secrets(self) -> None:
        """Stops a process that would run with the repository's public dev secrets outside the dev stack
        (anyone could forge Sumsub webhooks or read Temporal payloads)."""
        if self.dev_secrets_allowed:
            return
        defaults = type(self).model_fields
        still_dev = [
            name.upper()
            for name in _DEV_SECRETS
            if getattr(self, name) and getattr(self, name) == defaults[name].default
        ]
        if still_dev:
            raise SystemExit(
                f"refusing to start with the public dev values of {', '.join(still_dev)}: set real secrets "
                "(or DEV_SECRETS_ALLOWED=true for local development; `make dev` does)"
            )

    @model_validator(mode="after")
    def _distinct_levels(self) -> Settings:
        # An upgrade to the level the applicant is at would reset its review instead of moving it.
        for basic, advanced in (
            (self.sumsub_kyc_level, self.sumsub_advanced_kyc_level),
            (self.sumsub_kyb_level, self.sumsub_advanced_kyb_level),
        ):
            if basic == advanced:
                raise ValueError(f"the advanced Sumsub level must differ from the basic one ({basic!r})")
        return self

    @field_validator("event_webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        UrlPolicy.parse(allow_http=False, allowed_networks=value)  # a bad CIDR stops the start, named
        return value

    @field_validator("event_delivery_retry_schedule")
    @classmethod
    def _schedule(cls, value: list[timedelta]) -> list[timedelta]:
        if any(wait <= timedelta(0) for wait in value):
            raise ValueError("every wait must be positive")
        return value

    @property
    def event_webhook_policy(self) -> UrlPolicy:
        return UrlPolicy.parse(
            allow_http=self.event_webhook_allow_http, allowed_networks=self.event_webhook_allowed_networks
        )

    def sumsub_level_name(self, customer_type: CustomerType, level: KycLevel = KycLevel.BASIC) -> str:
        """Sumsub's level for a customer of this type at this KYC level (KYC for a person, KYB otherwise)."""
        kyc = CUSTOMER_TYPES[customer_type].flow is VerificationFlow.KYC
        if level is KycLevel.ADVANCED:
            return self.sumsub_advanced_kyc_level if kyc else self.sumsub_advanced_kyb_level
        return self.sumsub_kyc_level if kyc else self.sumsub_kyb_level

    @property
    def keycloak_issuer(self) -> str:
        return f"{self.keycloak_url.rstrip('/')}/realms/{self.keycloak_realm}"


_DEV_SECRETS = (
    "customer_id_secret",
    "keycloak_client_secret",
    "sumsub_app_token",
    "sumsub_secret_key",
    "sumsub_webhook_secret",
    "payload_encryption_keys",
    "s3_secret_access_key",
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
