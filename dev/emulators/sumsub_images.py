"""The Sumsub emulator's document images (`shared/spec/sumsub.md`, "Document images"): the WebSDK page's
file upload, the list (`GET /resources/applicants/{id}/metadata/resources`) and the download
(`GET /resources/applicants/{id}/resources/{imageId}`, the bytes with their Content-Type). Images are
kept in the emulator's state folder (`images/<imageId>.json`, the bytes base64), so they survive a restart.
"""

from __future__ import annotations

import base64
import html
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dev.emulators.state import Store

IMAGES_DIR = "images"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
ID_DOC_TYPES = ("PASSPORT", "ID_CARD", "DRIVERS", "RESIDENCE_PERMIT", "SELFIE", "UTILITY_BILL")

Json = dict[str, Any]


def upload_form(token: str) -> str:
    """The WebSDK page's form: one image of an identity document."""
    options = "".join(f'<option value="{t}">{t}</option>' for t in ID_DOC_TYPES)
    return (
        f'<form method="post" enctype="multipart/form-data" action="/websdk/{html.escape(token)}/images">'
        f'<label>Document <select name="idDocType">{options}</select></label> '
        '<label>Country (alpha-3) <input name="country" value="DEU" size="3"></label> '
        '<input type="file" name="file" required> <button type="submit">Upload image</button></form>'
    )


class SumsubImages:
    """`applicant` finds an applicant by Sumsub id (None when unknown), `link_applicant` the one behind a
    WebSDK token (or an error page), `review_answer` an applicant's current answer."""

    def __init__(
        self,
        *,
        store: Store,
        applicant: Callable[[str], Any | None],
        link_applicant: Callable[[str], Any],
        review_answer: Callable[[Any], str | None],
    ) -> None:
        self._store = store
        self._applicant = applicant
        self._link_applicant = link_applicant
        self._review_answer = review_answer
        self._images: dict[str, Json] = dict(store.read_all(IMAGES_DIR))

    async def websdk_upload(self, request: Request) -> Response:
        token = request.path_params["token"]
        found = self._link_applicant(token)
        if isinstance(found, Response):
            return found
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return JSONResponse({"description": "no file"}, status_code=400)
        content = await upload.read(MAX_IMAGE_BYTES + 1)
        if len(content) > MAX_IMAGE_BYTES:
            return JSONResponse({"description": "file too large"}, status_code=413)
        id_doc_type = str(form.get("idDocType") or "PASSPORT")
        image = {
            "id": str(secrets.randbelow(10**9)),
            "applicantId": found.id,
            "addedDate": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "fileName": upload.filename or "image",
            "fileType": upload.content_type or "application/octet-stream",
            "fileSize": len(content),
            "idDocType": id_doc_type if id_doc_type in ID_DOC_TYPES else "OTHER",
            "country": str(form.get("country") or "")[:3].upper() or None,
            "content": base64.b64encode(content).decode(),
        }
        self._images[image["id"]] = image
        self._store.write(f"{IMAGES_DIR}/{image['id']}.json", image)
        return RedirectResponse(f"/websdk/{token}", status_code=303)

    def _of(self, applicant_id: str) -> list[Json]:
        return sorted(
            (i for i in self._images.values() if i["applicantId"] == applicant_id), key=lambda i: i["addedDate"]
        )

    async def list_resources(self, request: Request) -> Response:
        applicant = self._applicant(request.path_params["applicant_id"])
        if applicant is None:
            return _not_found()
        answer = self._review_answer(applicant)
        items = [
            {
                "id": image["id"],
                "previewId": image["id"],
                "addedDate": image["addedDate"],
                "fileMetadata": {
                    "fileName": image["fileName"],
                    "fileType": image["fileType"],
                    "fileSize": image["fileSize"],
                },
                "idDocDef": {"idDocType": image["idDocType"], "country": image["country"]},
                "reviewResult": {"reviewAnswer": answer} if answer else {},
                "attemptId": None,
                "source": "fileupload",
                "deactivated": False,
            }
            for image in self._of(applicant.id)
        ]
        return JSONResponse({"items": items, "totalItems": len(items)})

    async def get_resource(self, request: Request) -> Response:
        image = self._images.get(request.path_params["image_id"])
        if image is None or image["applicantId"] != request.path_params["applicant_id"]:
            return _not_found()
        return Response(base64.b64decode(image["content"]), media_type=image["fileType"])


def _not_found() -> Response:
    return JSONResponse({"code": 404, "description": "Not found", "errorCode": 1001}, status_code=404)
