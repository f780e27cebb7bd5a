"""A local Sumsub for development and tests, honouring `shared/spec/sumsub.md`.

It checks request signatures like Sumsub, keeps applicants, sends signed webhooks in the real
payload shape on Sumsub's retry schedule, and serves a WebSDK page whose buttons play both the
customer (submit documents) and the compliance officer (approve, request resubmission, reject, hold).

With `--state-dir` it remembers, across restarts, its applicants, WebSDK links, the delivery log and
the webhooks still to deliver (resent on the same schedule after a restart; one in flight when the
process died is sent again, as Sumsub's at-least-once delivery allows). Without it, memory only.

Run it: `python -m dev.emulators.sumsub --webhook-url http://127.0.0.1:8000/webhooks/sumsub`.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import html
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from dev.emulators.latency import InjectedLatency
from dev.emulators.state import Store
from dev.emulators.sumsub_images import SumsubImages, upload_form
from integrations.sumsub.client import sign_request
from integrations.sumsub.webhooks import DEFAULT_WEBHOOK_DIGEST_ALG, WEBHOOK_DIGEST_ALGORITHMS, webhook_digest
from kit.logging import configure_logging
from kit.settings import get_settings

logger = logging.getLogger(__name__)

SIGNATURE_MAX_SKEW_SECONDS = 60
DEFAULT_RETRY_DELAYS = (300.0, 3600.0, 18000.0, 64800.0)
DEFAULT_ACTION_RETRY_DELAYS = (30.0, 30.0, 60.0, 300.0)
DEFAULT_DELIVERY_TIMEOUT = 5.0
DEV_DELAY_SCALE = 0.01
CLIENT_ID = "emulator"
# Under --state-dir: applicants/<id>.json, links/<token>.json, pending/<delivery id>.json, deliveries.jsonl
APPLICANTS_DIR = "applicants"
LINKS_DIR = "links"
PENDING_DIR = "pending"
DELIVERY_LOG = "deliveries.jsonl"
RESUBMISSION_COMMENT = "Document is blurry; please upload a new photo"

Endpoint = Callable[[Request], Awaitable[Response]]
Json = dict[str, Any]


def _sumsub_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _sumsub_date_ms(moment: datetime) -> str:
    """Sumsub's webhook `createdAtMs`: a string with milliseconds, despite the name."""
    return f"{_sumsub_date(moment)}.{moment.microsecond // 1000:03d}"


def _object_id() -> str:
    return secrets.token_hex(12)


def _correlation_id() -> str:
    return f"req-{uuid.uuid4()}"


def _error(
    status_code: int, description: str, *, error_code: int | None = None, error_name: str | None = None
) -> Response:
    """An error in Sumsub's shape: `{description, code, correlationId, errorCode?, errorName?}`."""
    body: Json = {"description": description, "code": status_code, "correlationId": _correlation_id()}
    if error_code is not None:
        body["errorCode"] = error_code
    if error_name is not None:
        body["errorName"] = error_name
    return JSONResponse(body, status_code=status_code)


# --- applicants ------------------------------------------------------------------------------------


@dataclass
class _Applicant:
    """One applicant and its review; the methods are the only state changes."""

    id: str
    inspection_id: str
    external_user_id: str
    level_name: str
    type: str
    email: str | None
    created_at: datetime
    review_id: str
    attempt_id: str
    attempt_cnt: int = 0
    review_status: str = "init"
    review_result: Json | None = None
    create_date: datetime | None = None
    review_date: datetime | None = None
    deactivated: bool = False
    phone: str | None = None
    fixed_info: Json = field(default_factory=dict)  # data provided by the bank or the applicant
    info: Json = field(default_factory=dict)  # data Sumsub extracted and verified (the WebSDK form, PATCH .../info)

    @property
    def reviewed(self) -> bool:
        """A review has completed: from then on a change of `info` fires applicantPersonalInfoChanged."""
        return self.review_status == "completed"

    def submit(self) -> None:
        self.attempt_cnt += 1
        self.attempt_id = _object_id()
        self.review_status = "pending"
        self.review_result = None
        self.create_date = datetime.now(UTC)
        self.review_date = None

    def hold(self) -> None:
        self.review_status = "onHold"

    def complete(self, result: Json) -> None:
        self.review_status = "completed"
        self.review_result = result
        self.review_date = datetime.now(UTC)

    def reset(self) -> None:
        self.review_status = "init"
        self.review_result = None
        self.review_date = None

    @property
    def level_locked(self) -> bool:
        """Sumsub refuses a level change while a review is under way."""
        return self.review_status in ("pending", "queued", "onHold")

    def move_to(self, level_name: str) -> None:
        """At another level the applicant starts again: that level's documents are requested."""
        self.level_name = level_name
        self.reset()

    def review_json(self) -> Json:
        review: Json = {
            "reviewId": self.review_id,
            "attemptId": self.attempt_id,
            "attemptCnt": self.attempt_cnt,
            "levelName": self.level_name,
            "reviewStatus": self.review_status,
        }
        if self.create_date is not None:
            review["createDate"] = _sumsub_date(self.create_date)
        if self.review_date is not None:
            review["reviewDate"] = _sumsub_date(self.review_date)
        if self.review_result is not None:
            review["reviewResult"] = self.review_result
        return review

    def to_json(self) -> Json:
        applicant: Json = {
            "id": self.id,
            "createdAt": _sumsub_date(self.created_at),
            "clientId": CLIENT_ID,
            "inspectionId": self.inspection_id,
            "externalUserId": self.external_user_id,
            "levelName": self.level_name,
            "type": self.type,
            "review": self.review_json(),
        }
        if self.email is not None:
            applicant["email"] = self.email
        if self.phone is not None:
            applicant["phone"] = self.phone
        if self.fixed_info:
            applicant["fixedInfo"] = self.fixed_info
        if self.info:
            applicant["info"] = self.info
        return applicant

    def state(self) -> Json:
        """What is stored under `--state-dir` (every field; dates as ISO 8601)."""
        return {
            "id": self.id,
            "inspection_id": self.inspection_id,
            "external_user_id": self.external_user_id,
            "level_name": self.level_name,
            "type": self.type,
            "email": self.email,
            "created_at": self.created_at.isoformat(),
            "review_id": self.review_id,
            "attempt_id": self.attempt_id,
            "attempt_cnt": self.attempt_cnt,
            "review_status": self.review_status,
            "review_result": self.review_result,
            "create_date": self.create_date.isoformat() if self.create_date else None,
            "review_date": self.review_date.isoformat() if self.review_date else None,
            "deactivated": self.deactivated,
            "phone": self.phone,
            "fixed_info": self.fixed_info,
            "info": self.info,
        }

    @classmethod
    def from_state(cls, state: Json) -> _Applicant:
        dates = ("created_at", "create_date", "review_date")
        fields: dict[str, Any] = {k: datetime.fromisoformat(v) if k in dates and v else v for k, v in state.items()}
        return cls(**fields)

    def webhook_payload(self, event_type: str) -> Json:
        """The real payload shape: identifiers and review state only, never personal data."""
        payload: Json = {
            "applicantId": self.id,
            "inspectionId": self.inspection_id,
            "correlationId": _correlation_id(),
            "externalUserId": self.external_user_id,
            "levelName": self.level_name,
            "type": event_type,
            "reviewStatus": self.review_status,
            "createdAtMs": _sumsub_date_ms(datetime.now(UTC)),
            "sandboxMode": True,
            "applicantType": self.type,
            "clientId": CLIENT_ID,
        }
        if event_type == "applicantReviewed" and self.review_result is not None:
            payload["reviewResult"] = self.review_result
        return payload


@dataclass(frozen=True)
class _WebSdkLink:
    external_user_id: str
    level_name: str
    expires_at: float  # Unix time: a link outlives a restart of the emulator

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at

    def state(self) -> Json:
        return {"external_user_id": self.external_user_id, "level_name": self.level_name, "expires_at": self.expires_at}


# --- webhooks --------------------------------------------------------------------------------------


@dataclass
class _Delivery:
    """One webhook on its way: its next attempt and when that is due (Unix time)."""

    id: str
    payload: Json
    body: str  # exactly the bytes signed and sent, the same on every attempt
    attempt: int = 0
    due: float = 0.0

    def state(self) -> Json:
        return {"id": self.id, "payload": self.payload, "body": self.body, "attempt": self.attempt, "due": self.due}


class _WebhookSender:
    """Delivers each webhook in its own task, retrying on Sumsub's schedule, and logs every attempt.

    With a store, a delivery is written down before its first attempt and after each failed one, and
    removed once delivered or given up; `running()` resumes those a previous process left."""

    def __init__(
        self,
        *,
        url: str | None,
        secret: str,
        alg: str,
        retry_delays: tuple[float, ...],
        action_retry_delays: tuple[float, ...],
        timeout: float,
        store: Store | None = None,
    ) -> None:
        self._store = store or Store(None)
        self.log: list[Json] = self._store.read_lines(DELIVERY_LOG)
        self._url = url
        self._secret = secret
        self._alg = alg
        self._retry_delays = retry_delays
        self._action_retry_delays = action_retry_delays
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Owns the HTTP client; resumes stored deliveries; on exit cancels deliveries still waiting to
        retry (they stay stored, so the next run resumes them)."""
        async with httpx.AsyncClient() as http:
            self._http = http
            if self._url is not None:
                for state in self._store.read_all(PENDING_DIR).values():
                    self._start(_Delivery(**state))
            try:
                yield
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._http = None

    def send(self, payload: Json) -> None:
        """Schedules delivery and returns at once: a slow receiver never blocks an API call."""
        if self._url is None:
            return
        body = json.dumps(payload, separators=(",", ":"))
        delivery = _Delivery(id=uuid.uuid4().hex, payload=payload, body=body, due=time.time())
        self._store.write(f"{PENDING_DIR}/{delivery.id}.json", delivery.state())
        self._start(delivery)

    def _start(self, delivery: _Delivery) -> None:
        task = asyncio.create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry_delays_for(self, event_type: str) -> tuple[float, ...]:
        return self._action_retry_delays if event_type.startswith("applicantAction") else self._retry_delays

    async def _deliver(self, delivery: _Delivery) -> None:
        payload, body = delivery.payload, delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "X-Payload-Digest": webhook_digest(body, self._secret, self._alg),
            "X-Payload-Digest-Alg": self._alg,
        }
        delays = self.retry_delays_for(payload["type"])
        while True:
            await asyncio.sleep(max(0.0, delivery.due - time.time()))
            attempt = delivery.attempt
            status, error = await self._post(body, headers)
            delivered = status is not None and 200 <= status < 300
            if delivered:
                outcome = "delivered"
            elif attempt < len(delays):
                outcome = "retrying"
            else:
                outcome = "gave_up"
                logger.warning("webhook %s %s given up after %d attempts", payload["type"], delivery.id, attempt + 1)
            entry = {
                "deliveryId": delivery.id,
                "type": payload["type"],
                "applicantId": payload["applicantId"],
                "attempt": attempt,
                "status": status,
                "error": error,
                "outcome": outcome,
                "at": datetime.now(UTC).isoformat(),
            }
            self.log.append(entry)
            self._store.append(DELIVERY_LOG, entry)
            if outcome != "retrying":
                self._store.delete(f"{PENDING_DIR}/{delivery.id}.json")
                return
            delivery.attempt += 1
            delivery.due = time.time() + delays[attempt]
            self._store.write(f"{PENDING_DIR}/{delivery.id}.json", delivery.state())

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        assert self._http is not None and self._url is not None, "webhooks are sent only while the app runs"
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(self._url, content=body, headers=headers)
        except TimeoutError:
            return None, f"no answer within {self._timeout} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None


# --- the emulator ----------------------------------------------------------------------------------


class _Emulator:
    """Sumsub: signed API endpoints, webhook sending and the WebSDK page; state in memory, and in
    `store` when it has a folder (each applicant and link saved as it changes)."""

    def __init__(
        self, *, app_token: str, secret_key: str, public_url: str, webhooks: _WebhookSender, store: Store
    ) -> None:
        self._app_token = app_token
        self._secret_key = secret_key
        self._public_url = public_url.rstrip("/")
        self.webhooks = webhooks
        self._store = store
        self._applicants: dict[str, _Applicant] = {}
        self._by_external_id: dict[str, _Applicant] = {}
        self._links: dict[str, _WebSdkLink] = {}
        for state in store.read_all(APPLICANTS_DIR).values():
            applicant = _Applicant.from_state(state)
            self._applicants[applicant.id] = applicant
            self._by_external_id[applicant.external_user_id] = applicant
        for token, state in store.read_all(LINKS_DIR).items():
            self._links[token] = _WebSdkLink(**state)

    def _save(self, applicant: _Applicant) -> None:
        self._store.write(f"{APPLICANTS_DIR}/{applicant.id}.json", applicant.state())

    # signing

    def signed(self, endpoint: Endpoint) -> Endpoint:
        """Wraps an API endpoint so it answers only correctly signed requests, as Sumsub does."""

        async def checked(request: Request) -> Response:
            if not await self._signature_ok(request):
                return _error(
                    401, "Request signature mismatch", error_code=4003, error_name="app-token-signature mismatch"
                )
            return await endpoint(request)

        return checked

    async def _signature_ok(self, request: Request) -> bool:
        token = request.headers.get("X-App-Token", "")
        ts = request.headers.get("X-App-Access-Ts", "")
        signature = request.headers.get("X-App-Access-Sig", "")
        if not hmac.compare_digest(token.encode(), self._app_token.encode()):
            return False
        if not (ts.isascii() and ts.isdigit()) or abs(time.time() - int(ts)) > SIGNATURE_MAX_SKEW_SECONDS:
            return False
        target: bytes = request.scope["raw_path"]
        if request.scope["query_string"]:
            target += b"?" + request.scope["query_string"]
        expected = sign_request(self._secret_key, ts, request.method, target, await request.body())
        return hmac.compare_digest(expected.encode(), signature.encode())

    # state changes (each one fires its webhook)

    def _create(self, *, external_user_id: str, level_name: str, applicant_type: str, email: str | None) -> _Applicant:
        applicant = _Applicant(
            id=_object_id(),
            inspection_id=_object_id(),
            external_user_id=external_user_id,
            level_name=level_name,
            type=applicant_type,
            email=email,
            created_at=datetime.now(UTC),
            review_id=_object_id(),
            attempt_id=_object_id(),
        )
        self._applicants[applicant.id] = applicant
        self._by_external_id[external_user_id] = applicant
        self._notify(applicant, "applicantCreated")
        return applicant

    def _notify(self, applicant: _Applicant, event_type: str, **extra: Any) -> None:
        """Saves the applicant's new state, then sends the webhook that announces it (plus `extra` fields)."""
        self._save(applicant)
        self.webhooks.send(applicant.webhook_payload(event_type) | extra)

    def _act(self, applicant: _Applicant, action: str) -> bool:
        """Applies a WebSDK button; False for an unknown action."""
        match action:
            case "submit":
                applicant.submit()
                self._notify(applicant, "applicantPending")
            case "hold":
                applicant.hold()
                self._notify(applicant, "applicantOnHold")
            case "approve":
                applicant.complete({"reviewAnswer": "GREEN"})
                self._notify(applicant, "applicantReviewed")
            case "resubmit":
                applicant.complete(
                    {
                        "reviewAnswer": "RED",
                        "rejectLabels": ["UNSATISFACTORY_PHOTOS"],
                        "reviewRejectType": "RETRY",
                        "moderationComment": RESUBMISSION_COMMENT,
                        "clientComment": "Photo of the identity document is not readable.",
                    }
                )
                self._notify(applicant, "applicantReviewed")
            case "reject":
                applicant.complete(
                    {
                        "reviewAnswer": "RED",
                        "rejectLabels": ["FORGERY"],
                        "reviewRejectType": "FINAL",
                        "moderationComment": "We could not verify your identity.",
                        "clientComment": "Suspected forged document.",
                    }
                )
                self._notify(applicant, "applicantReviewed")
            case _:
                return False
        return True

    # API endpoints

    async def create_applicant(self, request: Request) -> Response:
        level_name = request.query_params.get("levelName")
        if not level_name:
            return _error(400, "Required request parameter 'levelName' is not present")
        body = await _json_object(request)
        if body is None:
            return _error(400, "Request body must be a JSON object")
        external_user_id = body.get("externalUserId")
        if not isinstance(external_user_id, str) or not external_user_id:
            return _error(400, "externalUserId is required")
        applicant_type = body.get("type", "individual")
        if applicant_type not in ("individual", "company"):
            return _error(400, f"Unknown applicant type '{applicant_type}'")
        existing = self._by_external_id.get(external_user_id)
        if existing is not None:
            description = f"Applicant with external user id '{external_user_id}' already exists: {existing.id}"
            return JSONResponse(
                {"code": 409, "description": description, "correlationId": _correlation_id()}, status_code=409
            )
        email = body.get("email")
        applicant = self._create(
            external_user_id=external_user_id,
            level_name=level_name,
            applicant_type=applicant_type,
            email=email if isinstance(email, str) else None,
        )
        # Provided data: `fixedInfo` (a person), `info.companyInfo` (a company's, at creation), `phone`.
        fixed_info, info, phone = body.get("fixedInfo"), body.get("info"), body.get("phone")
        applicant.fixed_info = fixed_info if isinstance(fixed_info, dict) else {}
        applicant.info = info if isinstance(info, dict) else {}
        applicant.phone = phone if isinstance(phone, str) else None
        self._save(applicant)
        return JSONResponse(applicant.to_json(), status_code=201)

    async def get_applicant(self, request: Request) -> Response:
        reference: str = request.path_params["reference"]
        prefix = "-;externalUserId="
        if reference.startswith(prefix):
            applicant = self._by_external_id.get(reference.removeprefix(prefix))
        else:
            applicant = self._applicants.get(reference)
        if applicant is None:
            return _error(404, "Applicant not found")
        return JSONResponse(applicant.to_json())

    async def get_status(self, request: Request) -> Response:
        applicant = self._applicants.get(request.path_params["applicant_id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        return JSONResponse(applicant.review_json())

    async def reset(self, request: Request) -> Response:
        applicant = self._applicants.get(request.path_params["applicant_id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        applicant.reset()
        self._notify(applicant, "applicantReset")
        return JSONResponse({"ok": 1})

    async def move_to_level(self, request: Request) -> Response:
        """POST .../moveToLevel?name=: refused while a review is pending, queued or on hold; moving to the level
        the applicant is at changes nothing (so a repeated call is harmless)."""
        applicant = self._applicants.get(request.path_params["applicant_id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        level_name = request.query_params.get("name")
        if not level_name:
            return _error(400, "Required request parameter 'name' is not present")
        if applicant.level_locked:
            return _error(400, f"Level can't be changed while the applicant's review is {applicant.review_status}")
        if level_name != applicant.level_name:
            previous = applicant.level_name
            applicant.move_to(level_name)
            self._notify(applicant, "applicantLevelChanged", previousLevelName=previous)
        return JSONResponse(applicant.to_json())

    async def change_profile(self, request: Request) -> Response:
        """PATCH /resources/applicants: only the given fields change (email here); null fields are ignored."""
        body = await _json_object(request)
        if body is None or not isinstance(body.get("id"), str):
            return _error(400, "id is required")
        applicant = self._applicants.get(body["id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        if isinstance(body.get("email"), str):
            applicant.email = body["email"]
            self._save(applicant)
        return JSONResponse(applicant.to_json())

    async def change_info(self, request: Request) -> Response:
        """PATCH .../info: the extracted data (the body is the `info` object; each key sent replaces its
        value, `companyInfo` with its beneficiaries whole). After a review it fires applicantPersonalInfoChanged."""
        applicant = self._applicants.get(request.path_params["applicant_id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        body = await _json_object(request)
        if body is None:
            return _error(400, "Request body must be a JSON object")
        self._set_info(applicant, applicant.info | body)
        return JSONResponse(applicant.info)

    async def change_fixed_info(self, request: Request) -> Response:
        """PATCH .../fixedInfo: the provided data; each key sent replaces its value."""
        applicant = self._applicants.get(request.path_params["applicant_id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        body = await _json_object(request)
        if body is None:
            return _error(400, "Request body must be a JSON object")
        applicant.fixed_info = applicant.fixed_info | body
        self._save(applicant)
        return JSONResponse(applicant.fixed_info)

    def _set_info(self, applicant: _Applicant, info: Json) -> None:
        """Stores the verified data; a change after a completed review is announced, as Sumsub does."""
        changed = info != applicant.info
        applicant.info = info
        if changed and applicant.reviewed:
            self._notify(applicant, "applicantPersonalInfoChanged")
        else:
            self._save(applicant)

    async def deactivate(self, request: Request) -> Response:
        applicant = self._applicants.get(request.path_params["applicant_id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        applicant.deactivated = True
        self._notify(applicant, "applicantDeactivated")
        return JSONResponse({"ok": 1})

    async def test_completed(self, request: Request) -> Response:
        applicant = self._applicants.get(request.path_params["applicant_id"])
        if applicant is None:
            return _error(404, "Applicant not found")
        body = await _json_object(request)
        if body is None or body.get("reviewAnswer") not in ("GREEN", "RED"):
            return _error(400, "reviewAnswer must be GREEN or RED")
        if body.get("reviewRejectType") not in (None, "RETRY", "FINAL"):
            return _error(400, "reviewRejectType must be RETRY or FINAL")
        keys = ("reviewAnswer", "rejectLabels", "reviewRejectType", "moderationComment", "clientComment")
        applicant.complete({key: body[key] for key in keys if body.get(key) not in (None, [])})
        self._notify(applicant, "applicantReviewed")
        return JSONResponse({"ok": 1})

    async def websdk_link(self, request: Request) -> Response:
        body = await _json_object(request)
        if body is None:
            return _error(400, "Request body must be a JSON object")
        user_id, level_name, ttl = body.get("userId"), body.get("levelName"), body.get("ttlInSecs", 1800)
        if not isinstance(user_id, str) or not user_id or not isinstance(level_name, str) or not level_name:
            return _error(400, "userId and levelName are required")
        if not isinstance(ttl, int) or ttl < 0:
            return _error(400, "ttlInSecs must be a non-negative integer")
        token = secrets.token_urlsafe(24)
        self._links[token] = link = _WebSdkLink(user_id, level_name, time.time() + ttl)
        self._store.write(f"{LINKS_DIR}/{token}.json", link.state())
        return JSONResponse({"url": f"{self._public_url}/websdk/{token}"})

    async def sdk_access_token(self, request: Request) -> Response:
        body = await _json_object(request)
        if body is None:
            return _error(400, "Request body must be a JSON object")
        user_id, level_name = body.get("userId"), body.get("levelName")
        if not isinstance(user_id, str) or not user_id or not isinstance(level_name, str) or not level_name:
            return _error(400, "userId and levelName are required")
        return JSONResponse({"token": f"_act-sbx-jwt-{secrets.token_urlsafe(32)}", "userId": user_id})

    # emulator-only endpoints

    async def deliveries(self, request: Request) -> Response:
        return JSONResponse(self.webhooks.log)

    async def websdk_page(self, request: Request) -> Response:
        found = self._link_applicant(request.path_params["token"])
        if isinstance(found, Response):
            return found
        return HTMLResponse(_render_page(request.path_params["token"], found))

    async def websdk_data(self, request: Request) -> Response:
        """The WebSDK form: what the applicant typed becomes Sumsub's `info` (a person's or a company's)."""
        token = request.path_params["token"]
        found = self._link_applicant(token)
        if isinstance(found, Response):
            return found
        form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        self._set_info(found, _info_from_form(form, company=found.type == "company"))
        return RedirectResponse(f"/websdk/{token}", status_code=303)

    async def websdk_action(self, request: Request) -> Response:
        token = request.path_params["token"]
        found = self._link_applicant(token)
        if isinstance(found, Response):
            return found
        if not self._act(found, request.path_params["action"]):
            return _page(404, "Unknown action", "This button does not exist.")
        return RedirectResponse(f"/websdk/{token}", status_code=303)

    def _link_applicant(self, token: str) -> _Applicant | Response:
        """The applicant behind a WebSDK link, created on first visit as Sumsub does, or an error page."""
        link = self._links.get(token)
        if link is None:
            return _page(404, "Link not found", "This verification link does not exist.")
        if link.expired:
            return _page(410, "Link expired", "This verification link has expired; ask for a new one.")
        applicant = self._by_external_id.get(link.external_user_id)
        if applicant is None:
            applicant = self._create(
                external_user_id=link.external_user_id,
                level_name=link.level_name,
                applicant_type="individual",
                email=None,
            )
        return applicant


async def _json_object(request: Request) -> Json | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: Sumsub-shaped under /resources, plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/resources/"):
        return _error(exc.status_code, exc.detail)
    return PlainTextResponse(exc.detail, status_code=exc.status_code)


# --- WebSDK page -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; color: #222; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
dt { color: #666; } dd { margin: 0; font-family: ui-monospace, monospace; }
form { display: inline-block; margin: .2rem; } button { padding: .5rem .9rem; font-size: 1rem; }
.note { color: #666; font-size: .9rem; }
"""

_BUTTONS = (
    ("submit", "Submit documents"),
    ("approve", "Approve"),
    ("resubmit", "Request resubmission"),
    ("reject", "Reject"),
    ("hold", "Put on hold"),
)


def _page(status_code: int, title: str, message: str) -> HTMLResponse:
    body = f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
    return HTMLResponse(_document(title, body), status_code=status_code)


def _document(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _render_page(token: str, applicant: _Applicant) -> str:
    result = applicant.review_result or {}
    rows = {
        "Applicant": applicant.id,
        "External user id": applicant.external_user_id,
        "Level": applicant.level_name,
        "Review status": applicant.review_status,
        "Review answer": result.get("reviewAnswer", ""),
        "Reject type": result.get("reviewRejectType", ""),
        "Moderation comment": result.get("moderationComment", ""),
        "Attempts": str(applicant.attempt_cnt),
        "Deactivated": "yes" if applicant.deactivated else "no",
    }
    details = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows.items())
    forms = "".join(
        f'<form method="post" action="/websdk/{html.escape(token)}/{action}">'
        f'<button type="submit">{label}</button></form>'
        for action, label in _BUTTONS
    )
    body = (
        "<h1>Identity verification (Sumsub emulator)</h1>"
        f"<dl>{details}</dl>{_data_form(token, applicant)}{upload_form(token)}<div>{forms}</div>"
        '<p class="note">The form is what Sumsub recognised in the documents (its <code>info</code>): fill it '
        'before "Submit documents"; after a review, "Edit data" changes it and sends '
        'applicantPersonalInfoChanged. "Submit documents" acts for the customer; the other buttons act for '
        "the compliance officer. Each change sends its webhook.</p>"
    )
    return _document("Sumsub emulator", body)


# The WebSDK form's inputs: (form name, label, input type). A person's are `info` keys; the address is
# the first of `info.addresses`; a company's are `info.companyInfo` keys, one row per beneficiary.
_PERSON_FIELDS = (
    ("firstName", "First name", "text"),
    ("middleName", "Middle name", "text"),
    ("lastName", "Last name", "text"),
    ("dob", "Date of birth", "date"),
    ("country", "Nationality (alpha-3)", "text"),
    ("countryOfBirth", "Country of birth (alpha-3)", "text"),
    ("phone", "Phone", "tel"),
)
_ADDRESS_FIELDS = (
    ("street", "Street", "text"),
    ("town", "Town", "text"),
    ("postCode", "Post code", "text"),
    ("country", "Country (alpha-3)", "text"),
)
_COMPANY_FIELDS = (
    ("companyName", "Company name", "text"),
    ("registrationNumber", "Registration number", "text"),
    ("country", "Country (alpha-3)", "text"),
    ("legalAddress", "Legal address", "text"),
    ("incorporatedOn", "Incorporated on", "date"),
    ("type", "Company type", "text"),
)
_BENEFICIARY_FIELDS = (
    ("applicantId", "Beneficiary applicant id", "text"),
    ("positions", "Positions (comma-separated: ubo, director, shareholder, representative)", "text"),
    ("shareSize", "Share size (%)", "text"),
)
MIN_BENEFICIARY_ROWS = 3


def _input(name: str, label: str, kind: str, value: object) -> str:
    shown = "" if value is None else html.escape(str(value), quote=True)
    return (
        f"<label>{html.escape(label)} "
        f'<input type="{kind}" name="{html.escape(name, quote=True)}" value="{shown}"></label><br>'
    )


def _data_form(token: str, applicant: _Applicant) -> str:
    info = applicant.info
    if applicant.type == "company":
        raw = info.get("companyInfo")
        company: Json = raw if isinstance(raw, dict) else {}
        inputs = [_input(f"companyInfo.{key}", label, kind, company.get(key)) for key, label, kind in _COMPANY_FIELDS]
        known = [b for b in company.get("beneficiaries") or [] if isinstance(b, dict)]
        rows = known + [{}] * max(MIN_BENEFICIARY_ROWS - len(known), 1)
        for number, beneficiary in enumerate(rows, start=1):
            values = {**beneficiary, "positions": ", ".join(beneficiary.get("positions") or [])}
            inputs.append(f"<fieldset><legend>Beneficiary {number}</legend>")
            inputs += [
                _input(f"beneficiary.{key}", label, kind, values.get(key)) for key, label, kind in _BENEFICIARY_FIELDS
            ]
            inputs.append("</fieldset>")
    else:
        addresses = info.get("addresses")
        address = addresses[0] if isinstance(addresses, list) and addresses and isinstance(addresses[0], dict) else {}
        inputs = [_input(key, label, kind, info.get(key)) for key, label, kind in _PERSON_FIELDS]
        inputs += [_input(f"address.{key}", label, kind, address.get(key)) for key, label, kind in _ADDRESS_FIELDS]
    label = "Edit data" if applicant.reviewed else "Save data"
    return (
        f'<form method="post" action="/websdk/{html.escape(token)}/data" class="data">'
        f'<h2>Applicant data</h2>{"".join(inputs)}<button type="submit">{label}</button></form>'
    )


def _info_from_form(form: list[tuple[str, str]], *, company: bool) -> Json:
    """Sumsub's `info` from the WebSDK form: only what was filled in (Sumsub returns only what it recognised)."""
    if company:
        fields = {key.removeprefix("companyInfo."): v.strip() for key, v in form if key.startswith("companyInfo.")}
        company_info: Json = {key: value for key, value in fields.items() if value}
        columns = {key: [v.strip() for k, v in form if k == f"beneficiary.{key}"] for key, _, _ in _BENEFICIARY_FIELDS}
        beneficiaries = []
        for applicant_id, positions, share in zip(
            columns["applicantId"], columns["positions"], columns["shareSize"], strict=False
        ):
            row: Json = {}
            if applicant_id:
                row["applicantId"] = applicant_id
            if positions:
                row["positions"] = [p.strip() for p in positions.split(",") if p.strip()]
            try:
                row["shareSize"] = float(share) if share else None
            except ValueError:
                pass
            row = {key: value for key, value in row.items() if value is not None}
            if row:
                row["type"] = "individual"
                beneficiaries.append(row)
        if beneficiaries:
            company_info["beneficiaries"] = beneficiaries
        return {"companyInfo": company_info} if company_info else {}
    values = dict(form)
    info: Json = {key: values[key].strip() for key, _, _ in _PERSON_FIELDS if values.get(key, "").strip()}
    address = {
        key: values[f"address.{key}"].strip()
        for key, _, _ in _ADDRESS_FIELDS
        if values.get(f"address.{key}", "").strip()
    }
    if address:
        info["addresses"] = [address]
    return info


# --- app and command line --------------------------------------------------------------------------


def create_app(
    *,
    app_token: str,
    secret_key: str,
    webhook_url: str | None,
    webhook_secret: str,
    webhook_alg: str = DEFAULT_WEBHOOK_DIGEST_ALG,
    public_url: str,
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
    action_retry_delays: tuple[float, ...] = DEFAULT_ACTION_RETRY_DELAYS,
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
    state_dir: Path | None = None,
) -> ASGIApp:
    """The emulator app; `public_url` is how browsers reach it (WebSDK links point there). With
    `state_dir` it starts from the state kept there and keeps every change there."""
    if webhook_alg not in WEBHOOK_DIGEST_ALGORITHMS:
        raise ValueError(f"unknown webhook digest algorithm {webhook_alg!r}")
    store = Store(state_dir)
    webhooks = _WebhookSender(
        url=webhook_url,
        secret=webhook_secret,
        alg=webhook_alg,
        retry_delays=retry_delays,
        action_retry_delays=action_retry_delays,
        timeout=delivery_timeout,
        store=store,
    )
    emulator = _Emulator(
        app_token=app_token, secret_key=secret_key, public_url=public_url, webhooks=webhooks, store=store
    )
    signed = emulator.signed
    images = SumsubImages(
        store=store,
        applicant=emulator._applicants.get,
        link_applicant=emulator._link_applicant,
        review_answer=lambda applicant: (applicant.review_result or {}).get("reviewAnswer"),
    )
    routes = [
        Route("/resources/applicants", signed(emulator.create_applicant), methods=["POST"]),
        Route("/resources/applicants", signed(emulator.change_profile), methods=["PATCH"]),
        Route("/resources/applicants/{applicant_id}/info", signed(emulator.change_info), methods=["PATCH"]),
        Route("/resources/applicants/{applicant_id}/fixedInfo", signed(emulator.change_fixed_info), methods=["PATCH"]),
        Route("/resources/applicants/{reference:path}/one", signed(emulator.get_applicant), methods=["GET"]),
        Route("/resources/applicants/{applicant_id}/status", signed(emulator.get_status), methods=["GET"]),
        Route("/resources/applicants/{applicant_id}/reset", signed(emulator.reset), methods=["POST"]),
        Route("/resources/applicants/{applicant_id}/moveToLevel", signed(emulator.move_to_level), methods=["POST"]),
        Route(
            "/resources/applicants/{applicant_id}/presence/deactivated",
            signed(emulator.deactivate),
            methods=["PATCH"],
        ),
        Route(
            "/resources/applicants/{applicant_id}/status/testCompleted",
            signed(emulator.test_completed),
            methods=["POST"],
        ),
        Route("/resources/sdkIntegrations/levels/-/websdkLink", signed(emulator.websdk_link), methods=["POST"]),
        Route("/resources/accessTokens/sdk", signed(emulator.sdk_access_token), methods=["POST"]),
        Route("/_emulator/deliveries", emulator.deliveries, methods=["GET"]),
        Route("/websdk/{token}", emulator.websdk_page, methods=["GET"]),
        Route("/websdk/{token}/data", emulator.websdk_data, methods=["POST"]),
        Route("/websdk/{token}/images", images.websdk_upload, methods=["POST"]),
        Route("/websdk/{token}/{action}", emulator.websdk_action, methods=["POST"]),
        Route(
            "/resources/applicants/{applicant_id}/metadata/resources", signed(images.list_resources), methods=["GET"]
        ),
        Route(
            "/resources/applicants/{applicant_id}/resources/{image_id}", signed(images.get_resource), methods=["GET"]
        ),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with webhooks.running():
            yield

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    latency = InjectedLatency(app, prefixes=("/resources/",))
    app.router.routes.append(latency.route())
    return latency  # the Starlette app, behind the latency switch


def main(argv: Sequence[str] | None = None) -> None:
    """Serves the emulator with uvicorn; secrets come from the service settings so both sides agree."""
    settings = get_settings()
    default_url = httpx.URL(settings.sumsub_base_url)
    parser = argparse.ArgumentParser(prog="python -m dev.emulators.sumsub", description="Serve the Sumsub emulator.")
    parser.add_argument("--host", default=default_url.host, help="default: the host of SUMSUB_BASE_URL")
    parser.add_argument("--port", type=int, default=default_url.port or 8090, help="default: its port")
    parser.add_argument("--public-url", help="base URL browsers use for WebSDK links (default: http://HOST:PORT)")
    parser.add_argument("--webhook-url", help="where to POST webhooks; without it none are sent")
    parser.add_argument("--webhook-alg", choices=sorted(WEBHOOK_DIGEST_ALGORITHMS), default=DEFAULT_WEBHOOK_DIGEST_ALG)
    parser.add_argument(
        "--delay-scale",
        type=float,
        default=DEV_DELAY_SCALE,
        help=f"multiplies Sumsub's webhook retry delays (default {DEV_DELAY_SCALE}; 1 is Sumsub's real schedule)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep applicants, links and pending webhooks here across restarts (default: memory)",
    )
    args = parser.parse_args(argv)
    app = create_app(
        app_token=settings.sumsub_app_token,
        secret_key=settings.sumsub_secret_key,
        webhook_url=args.webhook_url,
        webhook_secret=settings.sumsub_webhook_secret,
        webhook_alg=args.webhook_alg,
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        retry_delays=tuple(delay * args.delay_scale for delay in DEFAULT_RETRY_DELAYS),
        action_retry_delays=tuple(delay * args.delay_scale for delay in DEFAULT_ACTION_RETRY_DELAYS),
        state_dir=args.state_dir,
    )
    configure_logging(fmt=settings.log_format, level=settings.log_level)  # JSON and redacted, no access log
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
