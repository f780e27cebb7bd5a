"""Sumsub's own KYC files of a customer: ops download one through the API, which fetches it from Sumsub
(signed) and hands the bytes on, so no Sumsub credential or URL reaches the browser.

`GET /kyc-documents/{customer_id}/{image_id}` with an ops bearer token: the image with Sumsub's
Content-Type, as an attachment, never cached; every download is an audit event. 401 without a valid
token, 403 without the ops role, 404 for an unknown customer, applicant or image, 503 when Sumsub fails.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import structlog
from starlette.requests import Request
from starlette.responses import Response

import db.customers
from api.auth import authorize
from api.errors import error_response
from api.state import AppState
from integrations.sumsub.client import SumsubError

log = structlog.get_logger("kyc_documents")


async def kyc_document_download(request: Request) -> Response:
    services: AppState = request.app.state.services
    principal = await authorize(request, services.verifier, "ops", what="downloading a KYC document")
    if isinstance(principal, Response):
        return principal
    try:
        customer_id = str(uuid.UUID(request.path_params["customer_id"]))
    except ValueError:
        return error_response(404, "no such customer")
    image_id = request.path_params["image_id"]
    state = await db.customers.get_customer(services.pool, customer_id)
    if state is None or state.applicant_id is None:
        return error_response(404, "no such customer or no Sumsub applicant")
    try:
        image = await services.sumsub_images.get_image(state.applicant_id, image_id)
    except SumsubError as exc:
        if exc.status_code == 404:
            return error_response(404, "no such image")
        log.warning("Sumsub image download failed", customer_id=customer_id, error=str(exc))
        return error_response(503, "Sumsub did not answer; retry")
    actor = principal.actor
    async with services.pool.acquire() as conn:
        await db.customers.append_event(
            conn,
            customer_id=customer_id,
            event_type="kyc_document.downloaded",
            actor=actor,
            details={"image_id": image_id, "content_type": image.content_type, "size": len(image.content)},
            occurred_at=datetime.now(UTC),
            workflow_id=None,
            run_id=None,
            idempotency_key=f"kyc_document:{image_id}:downloaded:{uuid.uuid4()}",
        )
    return Response(
        image.content,
        media_type=image.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="sumsub-{image_id}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
