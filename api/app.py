"""The API: GraphQL for the portal and ops, the Sumsub webhook, the Temporal UI's codec, health and readiness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from cross_web import HTTPException, StarletteRequestAdapter  # what strawberry.asgi builds on
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from strawberry.asgi import GraphQL

import db.pool
from api.auth import ANONYMOUS, AuthenticationError, IssuerUnavailable, TokenVerifier
from api.bodies import BodyLimit
from api.codec import codec_app
from api.compliance import ComplianceService
from api.documents import DocumentPolicy, DocumentService, object_store
from api.edge import BodyDeadline
from api.events_feed import events_feed
from api.export import DataExport
from api.inbox import WebhookInbox
from api.kyc_documents import kyc_document_download
from api.read_cache import ReadCache
from api.schema import Context, GraphQLLimits, build_schema
from api.service import CustomerService
from api.state import AppState
from api.subscriptions import SubscriptionService
from api.webhooks import sumsub_webhook
from db.data_keys import data_key_store
from integrations.keycloak import keycloak_admin
from integrations.sumsub.client import SumsubClient
from integrations.sumsub.images import SumsubImages
from integrations.sumsub.relay import WebhookRelay
from kit import metrics
from kit.codec import EncryptionCodec
from kit.logging import RequestIdMiddleware
from kit.settings import Settings
from kit.temporal import connect

READINESS_TIMEOUT_SECONDS = 2.0
# A multipart upload's body: the document plus its operations, map and part headers. A file within the body
# limit but over DOCUMENT_MAX_BYTES is BAD_USER_INPUT (api/documents.py); a larger body is 413 unread.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
GRAPHIQL_ASSETS_PATH = "/graphiql-assets"
GRAPHIQL_ASSETS_DIR = Path(__file__).resolve().parent / "static" / "graphiql"
# The CDN URLs in Strawberry's GraphiQL page -> the same files in api/static/graphiql (from npm).
GRAPHIQL_ASSETS = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": "react-dom.production.min.js",
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": "plugin-explorer.umd.js",
}


class AuthenticatedGraphQL(GraphQL[Context, None]):
    """Every operation needs a valid Keycloak access token; roles are checked per field."""

    async def get_context(self, request: Any, response: Any) -> Context:
        services: AppState = request.app.state.services
        if self.graphql_ide and self.should_render_graphql_ide(StarletteRequestAdapter(request)):
            return Context(services=services, principal=ANONYMOUS)  # the IDE page itself runs no operation
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer token")
        try:
            principal = await services.verifier.verify(token.strip())
        except IssuerUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        except AuthenticationError as exc:
            raise HTTPException(401, str(exc)) from None
        return Context(services=services, principal=principal)

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)  # its JSONDecodeError is json's, which Strawberry answers with 400

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    @property
    def graphql_ide_html(self) -> str:
        """Strawberry's GraphiQL page with its scripts and styles served by the API, not a public CDN, so
        it loads offline and behind a bank's proxy (the files are the pinned versions the page names,
        byte for byte: the page's integrity hashes still hold)."""
        html = super().graphql_ide_html
        for cdn_url, name in GRAPHIQL_ASSETS.items():
            html = html.replace(cdn_url, f"{GRAPHIQL_ASSETS_PATH}/{name}")
        return html


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 only when PostgreSQL and Temporal both answer, so scripts can wait for the stack."""
    services: AppState = request.app.state.services
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(services.pool.fetchval("SELECT 1"), READINESS_TIMEOUT_SECONDS)
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is reported, not raised
        checks["postgres"] = f"unavailable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(services.temporal.service_client.check_health(), READINESS_TIMEOUT_SECONDS)
        checks["temporal"] = "ok"
    except Exception as exc:  # same: report, do not raise
        checks["temporal"] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


def create_app(settings: Settings, *, graphiql: bool = False) -> Starlette:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL must be set for the API")
    settings.refuse_dev_secrets()
    database_url = settings.database_url
    document_policy = DocumentPolicy.from_settings(settings)  # a bad DOCUMENT_CONTENT_TYPES stops the start

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.pool.migrate(database_url)
        async with app_services(settings, lazy_temporal=True) as services:
            app.state.services = services
            sweepers = [asyncio.create_task(services.inbox.run()), asyncio.create_task(services.documents.run_sweeps())]
            try:
                yield
            finally:
                for sweeper in sweepers:
                    sweeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sweeper

    limits = GraphQLLimits(
        max_depth=settings.api_graphql_max_depth,
        max_aliases=settings.api_graphql_max_aliases,
        max_tokens=settings.api_graphql_max_tokens,
        max_cost=settings.api_graphql_max_cost,
        max_bytes=settings.api_graphql_max_bytes,
    )
    schema = build_schema(limits, introspection=graphiql)
    graphql = AuthenticatedGraphQL(
        schema,
        graphql_ide="graphiql" if graphiql else None,
        multipart_uploads_enabled=True,  # customerDocumentCreate (GraphQL multipart request spec)
    )
    return Starlette(
        routes=[
            Route(
                "/graphql",
                BodyLimit(
                    ReadCache(graphql, schema, max_customers=settings.api_read_cache_customers),
                    limits.max_bytes,
                    multipart_limit=document_policy.max_bytes + MULTIPART_OVERHEAD_BYTES,
                ),
                methods=["GET", "POST"],
            ),
            Route("/webhooks/sumsub", sumsub_webhook, methods=["POST"]),
            Route("/events", events_feed, methods=["GET"]),
            Route("/kyc-documents/{customer_id}/{image_id}", kyc_document_download, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Mount("/codec", app=codec_app(settings)),  # the Temporal UI decrypts payloads here
            *([Mount(GRAPHIQL_ASSETS_PATH, app=StaticFiles(directory=GRAPHIQL_ASSETS_DIR))] if graphiql else []),
        ],
        # Outermost first: the request id is bound (and echoed) around everything, including the metrics.
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(metrics.HttpMetricsMiddleware),
            Middleware(BodyDeadline, seconds=settings.api_body_timeout),  # inside: a 408 is counted and logged
        ],
        lifespan=lifespan,
    )


@contextlib.asynccontextmanager
async def app_services(settings: Settings, *, lazy_temporal: bool = False) -> AsyncIterator[AppState]:
    """Everything the routes and resolvers use, built once (the lifespan; tests that run the schema directly),
    closed newest first however far start-up got. `lazy_temporal` lets the API start while Temporal is down."""
    assert settings.database_url is not None
    async with contextlib.AsyncExitStack() as resources:
        pool = await db.pool.create_pool(settings.database_url, size=settings.database_pool_size)
        resources.push_async_callback(pool.close)
        data_keys = data_key_store(pool, settings.database_url, settings.payload_encryption_keys)
        if data_keys is not None:
            await data_keys.start()
            resources.push_async_callback(data_keys.aclose)
        http = await resources.enter_async_context(httpx.AsyncClient())
        temporal = await connect(settings, lazy=lazy_temporal, data_keys=data_keys)
        relay = WebhookRelay(pool=pool, temporal=temporal, event_time_tolerance=settings.sumsub_event_time_tolerance)
        sumsub_images = SumsubImages(
            base_url=settings.sumsub_base_url,
            app_token=settings.sumsub_app_token,
            secret_key=settings.sumsub_secret_key,
        )
        resources.push_async_callback(sumsub_images.aclose)
        store = object_store(settings)
        documents = DocumentService(pool=pool, store=store, policy=DocumentPolicy.from_settings(settings))
        customers = CustomerService(pool=pool, temporal=temporal, settings=settings)
        resources.push_async_callback(customers.aclose)
        # Erasure deletes the customer's Keycloak user and deactivates their applicant itself (api/compliance.py).
        keycloak = keycloak_admin(settings)
        resources.push_async_callback(keycloak.connection.aclose)
        # python-keycloak fetches tokens with a second httpx client that conn.aclose() leaves open.
        resources.push_async_callback(keycloak.connection.keycloak_openid.connection.aclose)
        sumsub = SumsubClient.from_settings(settings)
        resources.push_async_callback(sumsub.aclose)
        yield AppState(
            settings=settings,
            pool=pool,
            temporal=temporal,
            verifier=TokenVerifier(issuer=settings.keycloak_issuer, audience=settings.api_audience, http=http),
            customers=customers,
            inbox=WebhookInbox(pool=pool, relay=relay),
            documents=documents,
            subscriptions=SubscriptionService(
                pool, policy=settings.event_webhook_policy, secret_grace=settings.event_webhook_secret_grace
            ),
            sumsub_images=sumsub_images,
            data_keys=data_keys,
            codec=EncryptionCodec.from_spec(settings.payload_encryption_keys, data_keys=data_keys),
            compliance=ComplianceService(
                pool=pool,
                customers=customers,
                temporal=temporal,
                keycloak=keycloak,
                sumsub=sumsub,
                store=store,
                data_keys=data_keys,
                request_expiry=settings.four_eyes_request_expiry,
            ),
            export=DataExport(pool=pool, customers=customers, documents=documents, keycloak=keycloak),
        )
