"""Sumsub API client: request signing, typed responses and typed errors.

The same code talks to real Sumsub and to `dev.emulators.sumsub`; only the base URL differs. The contract
it follows is `shared/spec/sumsub.md`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from kit.settings import Settings

DEFAULT_TIMEOUT = 10.0

ApplicantType = Literal["individual", "company"]
ReviewAnswer = Literal["GREEN", "RED"]
RejectType = Literal["RETRY", "FINAL"]


# --- signing ---------------------------------------------------------------------------------------


def sign_request(secret_key: str, ts: int | str, method: str, path_with_query: str | bytes, body: bytes) -> str:
    """Sumsub's `X-App-Access-Sig`: hex HMAC-SHA256 over `ts + METHOD + path_with_query + body`.

    `path_with_query` must be byte-for-byte what goes on the wire (percent-encoding included), which is
    why it may be given as the raw bytes of the request target.
    """
    path = path_with_query if isinstance(path_with_query, bytes) else path_with_query.encode()
    message = str(ts).encode() + method.upper().encode() + path + body
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


class SumsubAuth(httpx.Auth):
    """Signs every request; needs the body because Sumsub signs the exact bytes sent."""

    requires_request_body = True

    def __init__(self, app_token: str, secret_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self._app_token = app_token
        self._secret_key = secret_key
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        ts = str(int(self._clock()))
        request.headers["X-App-Token"] = self._app_token
        request.headers["X-App-Access-Ts"] = ts
        request.headers["X-App-Access-Sig"] = sign_request(
            self._secret_key, ts, request.method, request.url.raw_path, request.content
        )
        yield request


# --- models ----------------------------------------------------------------------------------------


class _SumsubModel(BaseModel):
    """Sumsub speaks camelCase and adds fields without notice: map names, ignore the unknown."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class ReviewResult(_SumsubModel):
    """The outcome of a completed review: GREEN, or RED with RETRY (resubmit) or FINAL (rejected)."""

    review_answer: str | None = None
    reject_labels: list[str] = Field(default_factory=list)
    review_reject_type: str | None = None
    moderation_comment: str | None = None
    client_comment: str | None = None


class ReviewStatus(_SumsubModel):
    """Where an applicant's review stands (`/status`, and the `review` object of an applicant)."""

    review_status: str
    review_id: str | None = None
    attempt_id: str | None = None
    attempt_cnt: int = 0
    level_name: str | None = None
    create_date: str | None = None
    review_date: str | None = None
    review_result: ReviewResult | None = None


class Applicant(_SumsubModel):
    """The applicant fields this service relies on; `created_at` is Sumsub's UTC "YYYY-MM-DD HH:MM:SS"."""

    id: str
    external_user_id: str
    created_at: str
    inspection_id: str
    level_name: str | None = None
    type: str = "individual"
    review: ReviewStatus


# --- errors ----------------------------------------------------------------------------------------


class SumsubError(Exception):
    """A failed Sumsub call: an error answer (`status_code` set) or no answer at all (`status_code` None)."""

    def __init__(
        self,
        description: str,
        *,
        status_code: int | None,
        error_code: int | None = None,
        error_name: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(f"Sumsub {status_code or 'transport'} error: {description}")
        self.status_code = status_code
        self.description = description
        self.error_code = error_code
        self.error_name = error_name
        self.correlation_id = correlation_id

    @property
    def retryable(self) -> bool:
        """Worth trying again later: no answer, rate limited, or a server-side failure."""
        return self.status_code is None or self.status_code == 429 or self.status_code >= 500

    @classmethod
    def from_response(cls, response: httpx.Response) -> SumsubError:
        """Reads Sumsub's error body `{description, code, correlationId, errorCode?, errorName?}`."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return cls(response.text or response.reason_phrase, status_code=response.status_code)
        return cls(
            str(body.get("description") or response.reason_phrase),
            status_code=response.status_code,
            error_code=body.get("errorCode"),
            error_name=body.get("errorName"),
            correlation_id=body.get("correlationId"),
        )


# --- client ----------------------------------------------------------------------------------------


class SumsubClient:
    """The Sumsub calls this service makes, with signing, typed results and `SumsubError` on failure."""

    def __init__(self, *, base_url: str, app_token: str, secret_key: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, auth=SumsubAuth(app_token, secret_key), timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> SumsubClient:
        """A client configured from the service settings."""
        return cls(
            base_url=settings.sumsub_base_url,
            app_token=settings.sumsub_app_token,
            secret_key=settings.sumsub_secret_key,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def create_applicant(
        self,
        *,
        external_user_id: str,
        level_name: str,
        applicant_type: ApplicantType,
        email: str | None = None,
        fixed_info: dict[str, Any] | None = None,
        company_info: dict[str, Any] | None = None,
    ) -> tuple[Applicant, bool]:
        """Creates the applicant, or returns the existing one for `external_user_id` (second item False).

        Sumsub answers 409 when the external user id is taken; treating that as success makes the call
        safe to repeat after a timeout or a crash.
        """
        body: dict[str, Any] = {"externalUserId": external_user_id, "type": applicant_type}
        if email is not None:
            body["email"] = email
        if fixed_info:
            body["fixedInfo"] = fixed_info  # data provided by us (individuals)
        if company_info:
            body["info"] = {"companyInfo": company_info}  # a company's provided data goes under info
        try:
            data = await self._request("POST", "/resources/applicants", params={"levelName": level_name}, json=body)
        except SumsubError as error:
            if error.status_code != 409 or "already exists" not in error.description:
                raise
            existing = await self.get_applicant_by_external_user_id(external_user_id)
            if existing is None:
                raise
            return existing, False
        return Applicant.model_validate(data), True

    async def get_applicant(self, applicant_id: str) -> Applicant:
        data = await self._request("GET", f"/resources/applicants/{_segment(applicant_id)}/one")
        return Applicant.model_validate(data)

    async def get_applicant_data(self, applicant_id: str) -> dict[str, Any]:
        """The whole applicant as Sumsub returns it, `info` (what it verified) and `fixedInfo` included;
        `integrations.sumsub.profile` reads it."""
        data = await self._request("GET", f"/resources/applicants/{_segment(applicant_id)}/one")
        if not isinstance(data, dict):
            raise SumsubError("applicant is not a JSON object", status_code=None)
        return data

    async def change_applicant_info(self, applicant_id: str, info: dict[str, Any]) -> dict[str, Any]:
        """`PATCH .../info`: the extracted data (`companyInfo` with beneficiaries for a company)."""
        result: dict[str, Any] = await self._request(
            "PATCH", f"/resources/applicants/{_segment(applicant_id)}/info", json=info
        )
        return result

    async def change_applicant_fixed_info(self, applicant_id: str, fixed_info: dict[str, Any]) -> dict[str, Any]:
        """`PATCH .../fixedInfo`: the data provided by us or the applicant."""
        result: dict[str, Any] = await self._request(
            "PATCH", f"/resources/applicants/{_segment(applicant_id)}/fixedInfo", json=fixed_info
        )
        return result

    async def get_applicant_by_external_user_id(self, external_user_id: str) -> Applicant | None:
        """The applicant for our id, or None when Sumsub has none."""
        path = f"/resources/applicants/-;externalUserId={_segment(external_user_id)}/one"
        try:
            return Applicant.model_validate(await self._request("GET", path))
        except SumsubError as error:
            if error.status_code == 404:
                return None
            raise

    async def get_review_status(self, applicant_id: str) -> ReviewStatus:
        data = await self._request("GET", f"/resources/applicants/{_segment(applicant_id)}/status")
        return ReviewStatus.model_validate(data)

    async def create_websdk_link(self, *, external_user_id: str, level_name: str, ttl_seconds: int) -> str:
        """A WebSDK URL the customer opens to verify; it expires after `ttl_seconds`."""
        body = {"levelName": level_name, "userId": external_user_id, "ttlInSecs": ttl_seconds}
        data = await self._request("POST", "/resources/sdkIntegrations/levels/-/websdkLink", json=body)
        return str(data["url"])

    async def move_to_level(self, applicant_id: str, level_name: str) -> None:
        """Moves the applicant to another level (`applicantLevelChanged` follows); Sumsub refuses it while a
        review is pending, queued or on hold."""
        await self._request(
            "POST", f"/resources/applicants/{_segment(applicant_id)}/moveToLevel", params={"name": level_name}
        )

    async def reset_applicant(self, applicant_id: str) -> None:
        """Sends the applicant back to `init` so they can verify again from scratch."""
        await self._request("POST", f"/resources/applicants/{_segment(applicant_id)}/reset")

    async def change_applicant_email(self, applicant_id: str, email: str) -> None:
        """Sumsub's "change profile data details": a PATCH carrying only the fields to change."""
        await self._request("PATCH", "/resources/applicants", json={"id": applicant_id, "email": email})

    async def deactivate_applicant(self, applicant_id: str) -> None:
        await self._request("PATCH", f"/resources/applicants/{_segment(applicant_id)}/presence/deactivated")

    async def simulate_review(
        self,
        applicant_id: str,
        *,
        review_answer: ReviewAnswer,
        reject_type: RejectType | None = None,
        reject_labels: Sequence[str] = (),
        moderation_comment: str | None = None,
        client_comment: str | None = None,
    ) -> None:
        """Sandbox only: completes the review with the given outcome, as a compliance officer would."""
        body: dict[str, Any] = {"reviewAnswer": review_answer, "rejectLabels": list(reject_labels)}
        optional = {
            "reviewRejectType": reject_type,
            "moderationComment": moderation_comment,
            "clientComment": client_comment,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        await self._request("POST", f"/resources/applicants/{_segment(applicant_id)}/status/testCompleted", json=body)

    async def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: object = None
    ) -> Any:
        try:
            response = await self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise SumsubError(str(exc) or type(exc).__name__, status_code=None) from exc
        if response.is_error:
            raise SumsubError.from_response(response)
        return response.json()


def _segment(value: str) -> str:
    """Percent-encodes a value for one path segment (a `/` or `;` inside an id must not split it)."""
    return quote(value, safe="")
