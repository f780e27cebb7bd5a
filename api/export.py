"""The data subject's export (`customerDataExport`, compliance role): one JSON document of what we hold.

Registration and profile (provided and verified), statuses, the whole audit trail, the documents' metadata
with fresh download links (each link is audited as usual), the Sumsub webhooks received for the customer,
the compliance requests, and the Keycloak user's representation as the admin API returns it. The export
itself is a `customer.data_exported` audit row (who, when; never the content).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakError

import db.customers
import db.documents
import db.four_eyes
import db.inbox
import db.profiles
from api.documents import DocumentService
from api.errors import NotFound, Unavailable
from api.service import CustomerService

EXPORTED = "customer.data_exported"
MAX_EXPORTED_ROWS = 100_000  # per list; a customer's whole life is far below it


class DataExport:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        customers: CustomerService,
        documents: DocumentService,
        keycloak: KeycloakAdmin,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._customers = customers
        self._documents = documents
        self._keycloak = keycloak
        self._now = clock

    async def export(self, customer_id: str, *, actor: str) -> dict[str, Any]:
        state = await self._customers.get(customer_id)
        if state is None:
            raise NotFound("no customer with this id")
        now = self._now()
        profile = await db.profiles.get_profile(self._pool, customer_id)
        events = await db.customers.list_events(self._pool, customer_id, limit=MAX_EXPORTED_ROWS)
        documents = await db.documents.list_documents(
            self._pool, customer_id, include_archived=True, limit=MAX_EXPORTED_ROWS
        )
        exported_documents = []
        for document in reversed(documents):  # oldest first, like everything else here
            link = await self._documents.link(document, actor=actor)
            exported_documents.append(
                {
                    "id": document.id,
                    "kind": document.kind,
                    "filename": document.filename,
                    "originalFilename": document.original_filename,
                    "contentType": document.content_type,
                    "size": document.size,
                    "sha256": document.sha256,
                    "status": document.status.value,
                    "uploadedBy": document.uploaded_by,
                    "createdAt": document.created_at.isoformat(),
                    "downloadUrl": link.url,
                    "downloadUrlExpiresAt": link.expires_at.isoformat(),
                }
            )
        webhooks = await db.inbox.webhooks_for_customer(
            self._pool, customer_id, state.applicant_id, limit=MAX_EXPORTED_ROWS
        )
        requests = await db.four_eyes.for_customer(self._pool, customer_id)
        export: dict[str, Any] = {
            "exportedAt": now.isoformat(),
            "customerId": customer_id,
            "customer": state.model_dump(mode="json", exclude={"applied_kyc_events", "run_id"}),
            "profile": {
                "provided": state.registration.model_dump(
                    mode="json", include={"first_name", "last_name", "company_name"}
                ),
                "verified": None
                if profile is None
                else {
                    "applicantId": profile.applicant_id,
                    "verifiedAt": profile.verified_at.isoformat(),
                    "updatedAt": profile.updated_at.isoformat(),
                    **profile.profile.model_dump(mode="json"),
                },
            },
            "auditTrail": [
                {"type": e.event_type, "actor": e.actor, "occurredAt": e.occurred_at.isoformat(), "details": e.details}
                for e in reversed(events)
            ],
            "documents": exported_documents,
            "sumsubWebhooks": [
                {
                    "id": w.id,
                    "type": w.event_type,
                    "receivedAt": w.received_at.isoformat(),
                    "outcome": w.outcome,
                    "payload": w.payload,
                }
                for w in webhooks
            ],
            "complianceRequests": [db.four_eyes.audit_details(r) for r in requests],
            "keycloakUser": await self._keycloak_user(state.keycloak_user_id),
        }
        async with self._pool.acquire() as conn:
            await db.customers.append_event(
                conn,
                customer_id=customer_id,
                event_type=EXPORTED,
                actor=actor,
                details={"documents": len(exported_documents), "events": len(events), "webhooks": len(webhooks)},
                occurred_at=now,
                workflow_id=None,
                run_id=None,
                idempotency_key=f"export:{customer_id}:{uuid.uuid4()}",
            )
        return export

    async def _keycloak_user(self, user_id: str | None) -> dict[str, Any] | None:
        if user_id is None:
            return None
        try:
            user: dict[str, Any] = await self._keycloak.a_get_user(user_id)
        except KeycloakError as exc:
            if exc.response_code == 404:
                return None
            raise Unavailable("Keycloak could not be read; retry the export") from exc
        return user
