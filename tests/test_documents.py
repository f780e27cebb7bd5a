"""Customer documents on a real S3 server (the stack's SeaweedFS): upload, list, link (the presigned URL
fetched and its bytes' sha256 compared), archive, delete (the object gone from the server); refusals
(forged content type, oversize, closed customer, another customer's token) store nothing; an API process
killed between the metadata row and the object write (and after the write) leaves no orphan after the sweep."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import obstore
import pytest
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

import db.events
from api.documents import object_store, sanitise_filename, sniff_content_type
from api.events_feed import cloud_event
from dev.extra import extra_api
from dev.stack import DevStack
from tests.support.emulators import client_token, password_token
from tests.support.event_schemas import validator
from tests.support.graphql import finish_onboarding, graphql, press, register, wait_for_stage

PDF = b"%PDF-1.7\n" + os.urandom(1024 * 1024) + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
CREATE = """
mutation Create($input: CustomerDocumentCreateInput!) {
  customerDocumentCreate(input: $input) {
    id customerId filename originalFilename contentType size sha256 status uploadedBy createdAt kind
  }
}"""
LIST = (
    """query List($id: ID!, $all: Boolean!) { customer(id: $id) { documents(includeArchived: $all) { id status } } }"""
)
GET = "query Get($id: ID!) { customerDocument(id: $id) { id status sha256 } }"
LINK = """mutation Link($id: ID!) {
  customerDocumentDownloadLinkGenerate(input: {documentId: $id}) { url expiresAt } }"""
ARCHIVE = "mutation Archive($id: ID!) { customerDocumentArchive(input: {documentId: $id}) { id status } }"
DELETE = "mutation Delete($id: ID!) { customerDocumentDelete(input: {documentId: $id}) { id status } }"
EVENTS = "query Events($id: ID!) { customer(id: $id) { events { type actor details } } }"
PASSWORD = "a documents test password"


async def upload(
    http: httpx.AsyncClient, customer_id: str, content: bytes, filename: str, declared: str, kind: str | None = None
) -> httpx.Response:
    """The GraphQL multipart request spec: operations, map, then the file part."""
    operations = {"query": CREATE, "variables": {"input": {"customerId": customer_id, "file": None, "kind": kind}}}
    return await http.post(
        "/graphql",
        data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.input.file"]})},
        files={"0": (filename, content, declared)},
    )


async def registered(ops: httpx.AsyncClient, database: asyncpg.Pool, email: str) -> dict[str, Any]:
    """A new customer, once its projection row (which documents hang off) is written by the workflow."""
    customer = await register(ops, email, "INDIVIDUAL")
    deadline = time.monotonic() + 30
    while not await database.fetchval("SELECT 1 FROM customers WHERE id = $1", customer["id"]):
        assert time.monotonic() < deadline, "the customer's projection row never appeared"
        await asyncio.sleep(0.05)
    return customer


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def document_rows(database: asyncpg.Pool, customer_id: str) -> list[asyncpg.Record]:
    return await database.fetch(
        "SELECT id, status, object_key, size, sha256 FROM customer_documents WHERE customer_id = $1", customer_id
    )


def object_status(stack: DevStack, key: str) -> int:
    """What the S3 server answers for the object (200 there, 404 gone), by a URL signed here."""
    url = obstore.sign(object_store(stack.settings()), "GET", key, timedelta(minutes=1))
    return httpx.get(url).status_code


async def test_upload_list_link_archive_delete(stack: DevStack, ops: httpx.AsyncClient, database: asyncpg.Pool) -> None:
    customer = await registered(ops, database, f"docs-{uuid.uuid4().hex[:8]}@documents.example")
    response = await upload(ops, customer["id"], PDF, "../../etc/Contract März 2026.pdf", "application/pdf", "contract")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    document = body["data"]["customerDocumentCreate"]
    assert document["status"] == "ACTIVE" and document["customerId"] == customer["id"]
    assert document["contentType"] == "application/pdf" and document["size"] == len(PDF)
    assert document["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert document["filename"] == "Contract_Marz_2026.pdf"
    assert document["originalFilename"] == "../../etc/Contract März 2026.pdf"
    assert document["uploadedBy"] == "ops" and document["kind"] == "contract"

    listed = await graphql(ops, LIST, {"id": customer["id"], "all": False})
    assert listed["data"]["customer"]["documents"] == [{"id": document["id"], "status": "ACTIVE"}]
    got = await graphql(ops, GET, {"id": document["id"]})
    assert got["data"]["customerDocument"]["sha256"] == document["sha256"]

    link = (await graphql(ops, LINK, {"id": document["id"]}))["data"]["customerDocumentDownloadLinkGenerate"]
    async with httpx.AsyncClient() as plain:  # no token: the presigned URL alone, straight from S3
        fetched = await plain.get(link["url"])
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == document["sha256"]
        assert fetched.headers["content-type"] == "application/pdf"

    archived = await graphql(ops, ARCHIVE, {"id": document["id"]})
    assert archived["data"]["customerDocumentArchive"]["status"] == "ARCHIVED"
    assert (await graphql(ops, LIST, {"id": customer["id"], "all": False}))["data"]["customer"]["documents"] == []
    assert (await graphql(ops, LIST, {"id": customer["id"], "all": True}))["data"]["customer"]["documents"] == [
        {"id": document["id"], "status": "ARCHIVED"}
    ]

    deleted = await graphql(ops, DELETE, {"id": document["id"]})
    assert deleted["data"]["customerDocumentDelete"]["status"] == "DELETED"
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(link["url"])).status_code == 404  # the link is still valid; the object is gone
    [row] = await document_rows(database, customer["id"])
    assert row["status"] == "DELETED" and object_status(stack, row["object_key"]) == 404
    assert (await graphql(ops, GET, {"id": document["id"]}))["data"]["customerDocument"] is None

    events = (await graphql(ops, EVENTS, {"id": customer["id"]}))["data"]["customer"]["events"]
    actions = [e["type"] for e in events if e["type"].startswith("document.")]
    assert actions == ["document.deleted", "document.archived", "document.link_created", "document.uploaded"]
    assert all(e["actor"] == "ops" for e in events if e["type"].startswith("document."))

    # Published with the audit rows (the outbox), in the customer's sequence after its onboarding events;
    # a link is not published, and no file name is (it may name the customer).
    published = await database.fetch(
        "SELECT id, type, sequence, time, data::text FROM lifecycle_events"
        " WHERE customer_id = $1 AND type LIKE 'customer.document_%' ORDER BY sequence",
        customer["id"],
    )
    assert [p["type"] for p in published] == [
        "customer.document_added",
        "customer.document_archived",
        "customer.document_deleted",
    ]
    for event in published:
        data = json.loads(event["data"])
        assert data["document"] == {
            "id": document["id"],
            "kind": "contract",
            "contentType": "application/pdf",
            "size": len(PDF),
            "sha256": document["sha256"],
        }
        assert "Contract" not in json.dumps(data)
        envelope = cloud_event(
            db.events.LifecycleEvent(
                str(event["id"]), customer["id"], event["sequence"], event["type"], event["time"], data, (0, 0)
            ),
            "urn:test",
        )
        validator(event["type"]).validate(envelope)
    sequences = [
        r["sequence"]
        for r in await database.fetch(
            "SELECT sequence FROM lifecycle_events WHERE customer_id = $1 ORDER BY sequence", customer["id"]
        )
    ]
    assert sequences == list(range(1, len(sequences) + 1))  # gap-free with the workflow's own events


async def test_refusals_store_nothing(stack: DevStack, ops: httpx.AsyncClient, database: asyncpg.Pool) -> None:
    customer = await registered(ops, database, f"refused-{uuid.uuid4().hex[:8]}@documents.example")
    # An executable declared as a PDF: the bytes decide.
    forged = await upload(ops, customer["id"], b"MZ\x90\x00" + os.urandom(4096), "invoice.pdf", "application/pdf")
    assert codes(forged.json()) == ["BAD_USER_INPUT"] and forged.json()["errors"][0]["extensions"]["field"] == "file"
    # Over DOCUMENT_MAX_BYTES (10 MiB) but within the multipart body limit: BAD_USER_INPUT.
    oversize = b"%PDF-1.7\n" + b"0" * (10 * 1024 * 1024)
    too_big = await upload(ops, customer["id"], oversize, "big.pdf", "application/pdf")
    assert codes(too_big.json()) == ["BAD_USER_INPUT"], too_big.text
    # Far beyond it: 413 before the body is read.
    huge = await upload(ops, customer["id"], b"%PDF-" + b"0" * (12 * 1024 * 1024), "huge.pdf", "application/pdf")
    assert huge.status_code == 413
    # The portal may not upload.
    portal_token = await client_token(stack, "portal", "portal-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {portal_token}"}) as portal:
        assert codes((await upload(portal, customer["id"], PNG, "a.png", "image/png")).json()) == ["FORBIDDEN"]
    assert await document_rows(database, customer["id"]) == []

    closed = await registered(ops, database, f"closed-{uuid.uuid4().hex[:8]}@documents.example")
    close = await graphql(
        ops,
        'mutation C($id: ID!) { customerClose(input: {customerId: $id, reason: "test"}) { customer { status } } }',
        {"id": closed["id"]},
    )
    assert "errors" not in close, close
    deadline = time.monotonic() + 30
    while await database.fetchval("SELECT onboarding_stage FROM customers WHERE id = $1", closed["id"]) != "CLOSED":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    refused = await upload(ops, closed["id"], PNG, "a.png", "image/png")
    assert codes(refused.json()) == ["CONFLICT"]
    assert await document_rows(database, closed["id"]) == []


async def test_a_customer_sees_its_own_documents_only(
    stack: DevStack, ops: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    alice = await registered(ops, database, f"alice-{run}@documents.example")
    bob = await registered(ops, database, f"bob-{run}@documents.example")
    await finish_onboarding(ops, alice["id"])
    connection = KeycloakOpenIDConnection(
        server_url=stack.keycloak_url + "/",
        realm_name="customers",
        client_id="customer-lifecycle",
        client_secret_key="customer-lifecycle-dev-secret",
    )
    try:
        admin = KeycloakAdmin(connection=connection)
        [user] = await admin.a_get_users({"email": alice["email"], "exact": True})
        await admin.a_set_user_password(user["id"], PASSWORD, temporary=False)
    finally:
        await connection.keycloak_openid.connection.aclose()
        await connection.aclose()
    own = (await upload(ops, alice["id"], PNG, "id.png", "image/png")).json()["data"]["customerDocumentCreate"]
    other = (await upload(ops, bob["id"], PNG, "id.png", "image/png")).json()["data"]["customerDocumentCreate"]
    token = await password_token(stack.keycloak_url, alice["email"], PASSWORD)
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}) as http:
        listed = await graphql(http, LIST, {"id": alice["id"], "all": False})
        assert listed["data"]["customer"]["documents"] == [{"id": own["id"], "status": "ACTIVE"}]
        assert (await graphql(http, GET, {"id": own["id"]}))["data"]["customerDocument"]["id"] == own["id"]
        link = await graphql(http, LINK, {"id": own["id"]})
        assert link["data"]["customerDocumentDownloadLinkGenerate"]["url"].startswith(stack.child_env["S3_ENDPOINT"])
        # Another customer's: FORBIDDEN, by list, by id and by link, as for an id that does not exist.
        assert codes(await graphql(http, LIST, {"id": bob["id"], "all": True})) == ["FORBIDDEN"]
        assert codes(await graphql(http, GET, {"id": other["id"]})) == ["FORBIDDEN"]
        assert codes(await graphql(http, GET, {"id": str(uuid.uuid4())})) == ["FORBIDDEN"]
        assert codes(await graphql(http, LINK, {"id": other["id"]})) == ["FORBIDDEN"]
        # A customer neither uploads, archives nor deletes.
        assert codes((await upload(http, alice["id"], PNG, "x.png", "image/png")).json()) == ["FORBIDDEN"]
        assert codes(await graphql(http, ARCHIVE, {"id": own["id"]})) == ["FORBIDDEN"]
        assert codes(await graphql(http, DELETE, {"id": own["id"]})) == ["FORBIDDEN"]
    assert len(await document_rows(database, alice["id"])) == 1


@pytest.mark.parametrize(("point", "settled"), [("after_row", "FAILED"), ("after_object", "ACTIVE")])
async def test_an_api_killed_mid_upload_leaves_no_orphan(
    stack: DevStack, ops: httpx.AsyncClient, database: asyncpg.Pool, point: str, settled: str
) -> None:
    """A real SIGKILL of an API process at the point named, then another process's sweep finishes the upload
    (the object is whole: ACTIVE, the audit event written) or cleans it (no object: FAILED)."""
    customer = await registered(ops, database, f"crash-{point}-{uuid.uuid4().hex[:8]}@documents.example")
    async with extra_api(stack, {"DOCUMENT_UPLOAD_CRASH_POINT": point}) as crashing:
        async with httpx.AsyncClient(base_url=crashing, headers=dict(ops.headers), timeout=30) as http:
            http.headers["Authorization"] = f"Bearer {await client_token(stack, 'ops', 'ops-dev-secret')}"
            with pytest.raises(httpx.TransportError):  # the process died mid-request
                await upload(http, customer["id"], PDF, "crash.pdf", "application/pdf")
    [row] = await document_rows(database, customer["id"])
    assert row["status"] == "NEW"
    assert object_status(stack, row["object_key"]) == (200 if point == "after_object" else 404)
    async with extra_api(stack, {"DOCUMENT_SWEEP_AFTER": "PT1S"}):
        deadline = time.monotonic() + 30
        while (status := (await document_rows(database, customer["id"]))[0]["status"]) == "NEW":
            assert time.monotonic() < deadline, "the sweep never settled the upload"
            await asyncio.sleep(0.2)
    assert status == settled
    assert object_status(stack, row["object_key"]) == (200 if settled == "ACTIVE" else 404)
    events = (await graphql(ops, EVENTS, {"id": customer["id"]}))["data"]["customer"]["events"]
    uploaded = [e for e in events if e["type"] == "document.uploaded"]
    assert len(uploaded) == (1 if settled == "ACTIVE" else 0)
    if uploaded:
        assert uploaded[0]["actor"] == "ops" and uploaded[0]["details"]["repaired"] is True


def test_content_type_comes_from_the_bytes_and_filenames_are_sanitised() -> None:
    assert sniff_content_type(b"%PDF-1.4 ...") == "application/pdf"
    assert sniff_content_type(PNG) == "image/png"
    assert sniff_content_type(b"\xff\xd8\xff\xe0JFIF") == "image/jpeg"
    assert sniff_content_type("name;amount\nMüller;12\n".encode()) == "text/csv"
    assert sniff_content_type(b"MZ\x90\x00") is None
    assert sniff_content_type(b"<html><script>") is None
    assert sniff_content_type(b"a,b\n\x00\x01") is None
    assert sanitise_filename("../../x/..\\evil .sh") == "evil_.sh"
    assert sanitise_filename(".bashrc") == "bashrc"
    assert sanitise_filename("") == "document"
    assert sanitise_filename('a"; rm -rf;.pdf') == "a_rm_-rf_.pdf"


KYC_DOCUMENTS = """query Kyc($id: ID!) { customer(id: $id) {
  kycDocuments { id idDocType country addedDate reviewAnswer fileName contentType downloadPath } } }"""


async def test_ops_list_and_download_the_applicants_kyc_images_from_sumsub(
    stack: DevStack, ops: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    """An image uploaded on the emulator's WebSDK page is listed from Sumsub's metadata endpoint and
    proxied by the API to ops only; the emulator keeps it across a restart."""
    customer = await registered(ops, database, f"kyc-images-{uuid.uuid4().hex[:8]}@documents.example")
    waiting = await wait_for_stage(ops, customer["id"], "AWAITING_KYC")
    page = waiting["kyc"]["verificationUrl"]
    async with httpx.AsyncClient() as browser:
        assert 'enctype="multipart/form-data"' in (await browser.get(page)).text
        sent = await browser.post(
            f"{page}/images",
            data={"idDocType": "PASSPORT", "country": "DEU"},
            files={"file": ("passport.png", PNG, "image/png")},
        )
        assert sent.status_code == 303, sent.text
    await press(page, "submit")
    await wait_for_stage(ops, customer["id"], "KYC_IN_REVIEW")
    await press(page, "approve")
    await wait_for_stage(ops, customer["id"], "ONBOARDED")

    [image] = (await graphql(ops, KYC_DOCUMENTS, {"id": customer["id"]}))["data"]["customer"]["kycDocuments"]
    assert (image["idDocType"], image["country"], image["reviewAnswer"]) == ("PASSPORT", "DEU", "GREEN")
    assert image["fileName"] == "passport.png" and image["contentType"] == "image/png" and image["addedDate"]
    downloaded = await ops.get(image["downloadPath"])
    assert downloaded.status_code == 200 and downloaded.content == PNG
    assert downloaded.headers["content-type"] == "image/png" and downloaded.headers["cache-control"] == "no-store"
    portal_token = await client_token(stack, "portal", "portal-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url) as other:
        assert (await other.get(image["downloadPath"])).status_code == 401
        portal_headers = {"Authorization": f"Bearer {portal_token}"}
        assert (await other.get(image["downloadPath"], headers=portal_headers)).status_code == 403
        other.headers.update(portal_headers)
        assert codes(await graphql(other, KYC_DOCUMENTS, {"id": customer["id"]})) == ["FORBIDDEN"]
    assert (await ops.get(f"/kyc-documents/{customer['id']}/nope")).status_code == 404
    events = (await graphql(ops, EVENTS, {"id": customer["id"]}))["data"]["customer"]["events"]
    assert [e["actor"] for e in events if e["type"] == "kyc_document.downloaded"] == ["ops"]

    stack.restart("sumsub-emulator")
    deadline = time.monotonic() + 30
    while True:
        body = await graphql(ops, KYC_DOCUMENTS, {"id": customer["id"]})
        if "errors" not in body:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)
    assert [i["id"] for i in body["data"]["customer"]["kycDocuments"]] == [image["id"]]
    assert (await ops.get(image["downloadPath"])).content == PNG
