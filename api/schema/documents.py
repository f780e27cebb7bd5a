"""Customer documents in GraphQL: the types, inputs, the read and the changes (`api/documents.py` does them).

ops       upload, archive, delete, and everything below
portal    list (Customer.documents), one document, a download link
customer  the same for its own customer's documents only; any other is FORBIDDEN
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

import strawberry
from strawberry.file_uploads import Upload
from strawberry.types import Info

from api.errors import BadUserInput, Forbidden, NotFound, Unavailable
from api.schema.permissions import NOT_YOURS, Context, OpsOnly, PortalOpsOrCustomer, actor, is_staff, own_customer
from api.service import parse_customer_id
from db.documents import Document, DocumentStatus
from integrations.sumsub.client import SumsubError

strawberry.enum(DocumentStatus, name="CustomerDocumentStatus")


@strawberry.type(description="A file bank staff attached to a customer; its bytes are in object storage.")
class CustomerDocument:
    id: strawberry.ID
    customer_id: strawberry.ID
    kind: str | None
    filename: str = strawberry.field(description="Sanitised: letters, digits and ._- only.")
    original_filename: str = strawberry.field(description="As the uploader's client named it (metadata only).")
    content_type: str = strawberry.field(description="Decided from the bytes, not from what the client declared.")
    size: int
    sha256: str
    status: DocumentStatus
    uploaded_by: str
    created_at: datetime

    @classmethod
    def from_document(cls, document: Document) -> CustomerDocument:
        return cls(
            id=strawberry.ID(document.id),
            customer_id=strawberry.ID(document.customer_id),
            kind=document.kind,
            filename=document.filename,
            original_filename=document.original_filename,
            content_type=document.content_type,
            size=document.size,
            sha256=document.sha256,
            status=document.status,
            uploaded_by=document.uploaded_by,
            created_at=document.created_at,
        )


@strawberry.type(description="A presigned S3 URL: a plain GET downloads the document until `expiresAt`.")
class CustomerDocumentDownloadLink:
    url: str
    expires_at: datetime


@strawberry.type(description="An image of an identity document the applicant gave Sumsub (as Sumsub lists it).")
class KycDocument:
    id: strawberry.ID
    id_doc_type: str | None = strawberry.field(description="Sumsub's idDocType, e.g. PASSPORT, ID_CARD, SELFIE.")
    country: str | None = strawberry.field(description="The document's country (alpha-3).")
    added_date: str | None = strawberry.field(description="When it was added, Sumsub's UTC 'YYYY-MM-DD HH:MM:SS'.")
    review_answer: str | None = strawberry.field(description="GREEN or RED once reviewed.")
    file_name: str | None
    content_type: str | None
    download_path: str = strawberry.field(
        description="GET it from the API with an ops token: the API fetches the bytes from Sumsub."
    )


async def list_kyc_documents(info: Info[Context, Any], customer_id: str, applicant_id: str | None) -> list[KycDocument]:
    if applicant_id is None:
        return []
    try:
        images = await info.context.services.sumsub_images.list_images(applicant_id)
    except SumsubError as exc:
        if exc.status_code == 404:
            return []
        raise Unavailable("Sumsub did not answer; retry") from exc
    return [
        KycDocument(
            id=strawberry.ID(image.id),
            id_doc_type=image.id_doc_type,
            country=image.country,
            added_date=image.added_date,
            review_answer=image.review_answer,
            file_name=image.file_name,
            content_type=image.file_type,
            download_path=f"/kyc-documents/{customer_id}/{quote(image.id, safe='')}",
        )
        for image in images
    ]


@strawberry.input
class CustomerDocumentCreateInput:
    customer_id: strawberry.ID
    file: Upload
    kind: str | None = strawberry.field(default=None, description="What it is, e.g. contract, statement.")


@strawberry.input
class CustomerDocumentDownloadLinkGenerateInput:
    document_id: strawberry.ID


@strawberry.input
class CustomerDocumentArchiveInput:
    document_id: strawberry.ID


@strawberry.input
class CustomerDocumentDeleteInput:
    document_id: strawberry.ID


def parse_document_id(value: str, field: str = "documentId") -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise BadUserInput("not a document id", field=field) from None


async def _readable(info: Info[Context, Any], document_id: str) -> Document | None:
    """The document if the caller may see it: staff any, a customer's token only its own customer's
    (another's, or none, is FORBIDDEN alike)."""
    document = await info.context.services.documents.get(document_id)
    if not is_staff(info):
        if document is None:
            raise Forbidden(NOT_YOURS)
        await own_customer(info, document.customer_id)
    return document


async def list_documents(info: Info[Context, Any], customer_id: str, include_archived: bool) -> list[CustomerDocument]:
    documents = await info.context.services.documents.list(customer_id, include_archived=include_archived)
    return [CustomerDocument.from_document(d) for d in documents]


@strawberry.type
class DocumentQuery:
    @strawberry.field(
        permission_classes=[PortalOpsOrCustomer],
        description="One customer document (ACTIVE or ARCHIVED); null when there is none. A customer's own "
        "token sees its own customer's only (any other is FORBIDDEN).",
    )
    async def customer_document(self, info: Info[Context, Any], id: strawberry.ID) -> CustomerDocument | None:
        document = await _readable(info, parse_document_id(id, field="id"))
        return None if document is None else CustomerDocument.from_document(document)


@strawberry.type
class DocumentMutation:
    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="Attaches a file to a customer (GraphQL multipart request; ops only). PDF, PNG, JPEG or "
        "CSV by its bytes, at most DOCUMENT_MAX_BYTES; a closed customer is CONFLICT.",
    )
    async def customer_document_create(
        self, info: Info[Context, Any], input: CustomerDocumentCreateInput
    ) -> CustomerDocument:
        customer_id = parse_customer_id(input.customer_id, field="customerId")
        document = await info.context.services.documents.upload(
            customer_id=customer_id, upload=input.file, kind=input.kind, actor=actor(info)
        )
        return CustomerDocument.from_document(document)

    @strawberry.mutation(
        permission_classes=[PortalOpsOrCustomer],
        description="A presigned download URL, valid DOCUMENT_LINK_TTL; for the portal, ops, or the customer "
        "themself (another customer's document is FORBIDDEN).",
    )
    async def customer_document_download_link_generate(
        self, info: Info[Context, Any], input: CustomerDocumentDownloadLinkGenerateInput
    ) -> CustomerDocumentDownloadLink:
        document = await _readable(info, parse_document_id(input.document_id))
        if document is None:
            raise NotFound("no document with this id")
        link = await info.context.services.documents.link(document, actor=actor(info))
        return CustomerDocumentDownloadLink(url=link.url, expires_at=link.expires_at)

    @strawberry.mutation(permission_classes=[OpsOnly], description="Hides a document from the default list (ops).")
    async def customer_document_archive(
        self, info: Info[Context, Any], input: CustomerDocumentArchiveInput
    ) -> CustomerDocument:
        document = await info.context.services.documents.archive(
            parse_document_id(input.document_id), actor=actor(info)
        )
        return CustomerDocument.from_document(document)

    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="Removes the document's object from storage, then marks it DELETED (ops).",
    )
    async def customer_document_delete(
        self, info: Info[Context, Any], input: CustomerDocumentDeleteInput
    ) -> CustomerDocument:
        document = await info.context.services.documents.delete(parse_document_id(input.document_id), actor=actor(info))
        return CustomerDocument.from_document(document)
