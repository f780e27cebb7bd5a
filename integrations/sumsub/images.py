"""Sumsub's document images of an applicant (`shared/spec/sumsub.md`, "Document images"): the list and
one image's bytes. Signed like every Sumsub call (`SumsubAuth`); the API proxies the bytes to ops only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from integrations.sumsub.client import DEFAULT_TIMEOUT, SumsubAuth, SumsubError

MAX_IMAGE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class DocumentImage:
    """One image as Sumsub lists it; every field but the id may be missing."""

    id: str
    id_doc_type: str | None
    country: str | None
    added_date: str | None
    review_answer: str | None
    file_name: str | None
    file_type: str | None
    file_size: int | None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DocumentImage:
        definition = item.get("idDocDef") or {}
        metadata = item.get("fileMetadata") or {}
        review = item.get("reviewResult") or {}
        size = metadata.get("fileSize")
        return cls(
            id=str(item["id"]),
            id_doc_type=definition.get("idDocType"),
            country=definition.get("country"),
            added_date=item.get("addedDate"),
            review_answer=review.get("reviewAnswer"),
            file_name=metadata.get("fileName"),
            file_type=metadata.get("fileType"),
            file_size=size if isinstance(size, int) else None,
        )


@dataclass(frozen=True)
class ImageContent:
    content: bytes
    content_type: str


class SumsubImages:
    def __init__(self, *, base_url: str, app_token: str, secret_key: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), auth=SumsubAuth(app_token, secret_key), timeout=timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_images(self, applicant_id: str) -> list[DocumentImage]:
        response = await self._get(f"/resources/applicants/{_segment(applicant_id)}/metadata/resources")
        items = response.json().get("items") or []
        return [DocumentImage.from_item(item) for item in items if isinstance(item, dict) and "id" in item]

    async def get_image(self, applicant_id: str, image_id: str) -> ImageContent:
        response = await self._get(f"/resources/applicants/{_segment(applicant_id)}/resources/{_segment(image_id)}")
        if len(response.content) > MAX_IMAGE_BYTES:
            raise SumsubError("image larger than we proxy", status_code=None)
        return ImageContent(response.content, response.headers.get("content-type", "application/octet-stream"))

    async def _get(self, path: str) -> httpx.Response:
        try:
            response = await self._http.get(path)
        except httpx.TransportError as exc:
            raise SumsubError(str(exc) or type(exc).__name__, status_code=None) from exc
        if response.is_error:
            raise SumsubError.from_response(response)
        return response


def _segment(value: str) -> str:
    return quote(value, safe="")
