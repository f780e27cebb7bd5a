"""Payload encryption: the codec itself, the /codec server the Temporal UI calls, and the proof on the
real stack that no plaintext personal data reaches Temporal's history."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.routing import Mount
from temporalio.api.common.v1 import Payload, Payloads, SearchAttributes
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from api.auth import AuthenticationError, Principal
from api.codec import codec_app
from db.data_keys import DataKeyStore
from dev.stack import DevStack
from kit.codec import (
    CUSTOMER_KEY_PREFIX,
    DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS,
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    KeyConfigError,
    PayloadDecryptionError,
    data_converter,
    parse_keys,
)
from kit.settings import Settings
from tests.support.emulators import client_token
from tests.support.graphql import REGISTER, fill_in, finish_onboarding, graphql, wait_for_stage

UI_ORIGIN = "http://127.0.0.1:8233"
CORS_HEADERS = "x-namespace,content-type,authorization"


def _key() -> bytes:
    return os.urandom(32)


def _spec(*pairs: tuple[str, bytes]) -> str:
    return ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in pairs)


def _plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"email": text}).encode())


# --- the codec --------------------------------------------------------------------------------------


async def test_round_trip_hides_the_whole_payload_and_names_the_key() -> None:
    codec = EncryptionCodec({"k1": _key()})
    original = [_plain("jane@example.com"), Payload(metadata={"encoding": b"binary/null"})]
    encoded = await codec.encode(original)
    for payload in encoded:
        assert dict(payload.metadata) == {"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: b"k1"}
        assert b"jane" not in payload.SerializeToString() and b"json/plain" not in payload.data
    assert await codec.decode(encoded) == original


async def test_every_encryption_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec({"k1": _key()})
    first, second = await codec.encode([_plain("a@example.com"), _plain("a@example.com")])
    assert first.data[:12] != second.data[:12] and first.data != second.data


async def test_rotation_encrypts_with_the_newest_key_and_decrypts_with_any() -> None:
    old, new = ("2025-01", _key()), ("2026-01", _key())
    before = EncryptionCodec(parse_keys(_spec(old)))
    sealed_with_old = await before.encode([_plain("old@example.com")])
    after = EncryptionCodec(parse_keys(_spec(new, old)))  # the new key prepended
    assert await after.decode(sealed_with_old) == [_plain("old@example.com")]
    sealed_with_new = await after.encode([_plain("new@example.com")])
    assert sealed_with_new[0].metadata[KEY_ID_METADATA] == b"2026-01"
    with pytest.raises(PayloadDecryptionError, match="'2026-01'"):
        await before.decode(sealed_with_new)  # a process that still lacks the new key says which one


async def test_unknown_key_id_is_a_clear_error() -> None:
    sealed = await EncryptionCodec({"retired": _key()}).encode([_plain("x@example.com")])
    with pytest.raises(PayloadDecryptionError, match=r"key id 'retired'.*not in PAYLOAD_ENCRYPTION_KEYS"):
        await EncryptionCodec({"current": _key()}).decode(sealed)


async def test_tampering_is_detected() -> None:
    key_a, key_b = _key(), _key()
    codec = EncryptionCodec({"a": key_a, "b": key_b})
    (sealed,) = await codec.encode([_plain("x@example.com")])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    renamed = Payload(metadata={**sealed.metadata, KEY_ID_METADATA: b"b"}, data=sealed.data)
    truncated = Payload(metadata=sealed.metadata, data=sealed.data[:12])
    for bad in (Payload(metadata=sealed.metadata, data=bytes(flipped)), renamed, truncated):
        with pytest.raises(PayloadDecryptionError):
            await codec.decode([bad])


async def test_payloads_not_marked_encrypted_pass_through_decode() -> None:
    legacy = [_plain("written-before-encryption@example.com")]
    assert await EncryptionCodec({"k": _key()}).decode(legacy) == legacy


def test_key_configuration_is_parsed_newest_first() -> None:
    k1, k2 = _key(), _key()
    assert list(parse_keys(f" {_spec(('new', k1))} , {_spec(('old', k2))} ").items()) == [("new", k1), ("old", k2)]
    assert parse_keys("") == {} and parse_keys("  ") == {}
    assert list(parse_keys(DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS)) == ["dev-only-insecure"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "not `id:base64key`"),
        ("k:", "not `id:base64key`"),
        (":" + base64.b64encode(bytes(32)).decode(), "not `id:base64key`"),
        ("k:not base64!", "not valid base64"),
        ("k:" + base64.b64encode(bytes(16)).decode(), "16 bytes, AES-256 needs 32"),
        ("bad id:" + base64.b64encode(bytes(32)).decode(), "key id 'bad id'"),
        (_spec(("k", bytes(32)), ("k", bytes(32))), "listed twice"),
        (_spec(("k", bytes(32))) + ",", "entry 2 is not"),
    ],
)
def test_bad_key_configuration_is_refused_without_echoing_keys(spec: str, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message) as raised:
        parse_keys(spec)
    encoded_keys = [part.partition(":")[2] for part in spec.split(",") if len(part.partition(":")[2]) > 8]
    assert not any(key in str(raised.value) for key in encoded_keys)
    with pytest.raises(KeyConfigError):
        data_converter(Settings(payload_encryption_keys=spec))


async def test_the_data_converter_encrypts_values_and_failure_messages() -> None:
    converter = data_converter(Settings(payload_encryption_keys=_spec(("k", _key()))))
    (payload,) = await converter.encode([{"email": "jane@example.com"}])
    assert payload.metadata["encoding"] == ENCRYPTED_ENCODING and b"jane" not in payload.data
    assert await converter.decode([payload]) == [{"email": "jane@example.com"}]
    failure = Failure()
    await converter.encode_failure(ApplicationError("no account for jane@example.com", type="X"), failure)
    assert b"jane" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == "no account for jane@example.com"


def test_an_empty_key_list_turns_encryption_off() -> None:
    assert data_converter(Settings(payload_encryption_keys="")) is pydantic_data_converter
    assert data_converter(Settings()).payload_codec is not None  # on by default (the dev-only key)


# --- the codec server, in process -----------------------------------------------------------------


class StubVerifier:
    """Accepts the tokens it was given (the real verifier runs in the end-to-end tests below)."""

    def __init__(self, principals: dict[str, Principal]) -> None:
        self._principals = principals

    async def verify(self, token: str) -> Principal:
        if token not in self._principals:
            raise AuthenticationError("invalid token")
        return self._principals[token]


@pytest.fixture
async def codec_http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    settings = Settings(
        **{"payload_encryption_keys": _spec(("k", _key())), "temporal_ui_origin": UI_ORIGIN, **overrides}
    )
    app = Starlette(routes=[Mount("/codec", app=codec_app(settings))])
    app.state.services = SimpleNamespace(
        codec=EncryptionCodec.from_spec(settings.payload_encryption_keys),
        verifier=StubVerifier(
            {
                "ops-token": Principal(subject="ops", client_id="ops", roles=frozenset({"ops"})),
                "portal-token": Principal(subject="portal", client_id="portal", roles=frozenset({"portal"})),
            }
        ),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


def _body(*payloads: Payload) -> dict[str, Any]:
    return json_format.MessageToDict(Payloads(payloads=payloads))


def _payloads(response: httpx.Response) -> list[Payload]:
    return list(json_format.ParseDict(response.json(), Payloads()).payloads)


OPS = {"Authorization": "Bearer ops-token"}


async def test_codec_server_encodes_and_decodes_for_ops(codec_http: httpx.AsyncClient) -> None:
    plain = _plain("jane@example.com")
    encoded = await codec_http.post("/codec/encode", json=_body(plain), headers=OPS)
    assert encoded.status_code == 200, encoded.text
    (sealed,) = _payloads(encoded)
    assert sealed.metadata["encoding"] == ENCRYPTED_ENCODING and b"jane" not in sealed.data
    decoded = await codec_http.post("/codec/decode", json=encoded.json(), headers=OPS)
    assert decoded.status_code == 200 and _payloads(decoded) == [plain]
    empty = await codec_http.post("/codec/decode", json={"payloads": []}, headers=OPS)
    assert empty.json() == {"payloads": []}


async def test_codec_server_refuses_callers_without_the_ops_role(codec_http: httpx.AsyncClient) -> None:
    body = _body(_plain("x@example.com"))
    assert (await codec_http.post("/codec/decode", json=body)).status_code == 401
    assert (
        await codec_http.post("/codec/decode", json=body, headers={"Authorization": "Basic b3BzOm9wcw=="})
    ).status_code == 401
    assert (
        await codec_http.post("/codec/decode", json=body, headers={"Authorization": "Bearer forged"})
    ).status_code == 401
    for path in ("/codec/decode", "/codec/encode"):
        response = await codec_http.post(path, json=body, headers={"Authorization": "Bearer portal-token"})
        assert response.status_code == 403 and response.json() == {"error": "the codec needs the ops role"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b'"payloads"',
        b'{"payloads": "x"}',
        b'{"payloads": [1]}',
        b'{"other": []}',
        b'{"payloads": [{"metadata": {"encoding": 5}}]}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
async def test_codec_server_answers_400_to_malformed_bodies(codec_http: httpx.AsyncClient, body: bytes) -> None:
    response = await codec_http.post("/codec/decode", content=body, headers={**OPS, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "error" in response.json()


async def test_codec_server_answers_413_and_422(codec_http: httpx.AsyncClient) -> None:
    huge = b'{"payloads": [{"data": "' + b"A" * (9 * 1024 * 1024) + b'"}]}'
    assert (await codec_http.post("/codec/decode", content=huge, headers=OPS)).status_code == 413
    foreign = await EncryptionCodec({"elsewhere": _key()}).encode([_plain("x@example.com")])
    response = await codec_http.post("/codec/decode", json=_body(*foreign), headers=OPS)
    assert response.status_code == 422 and "'elsewhere'" in response.json()["error"]


@pytest.mark.parametrize("codec_http", [{"codec_auth_required": False}], indirect=True)
async def test_with_auth_off_the_codec_needs_no_token(codec_http: httpx.AsyncClient) -> None:
    encoded = await codec_http.post("/codec/encode", json=_body(_plain("dev@example.com")))
    assert encoded.status_code == 200
    decoded = await codec_http.post("/codec/decode", json=encoded.json())
    assert _payloads(decoded) == [_plain("dev@example.com")]


@pytest.mark.parametrize("codec_http", [{"payload_encryption_keys": ""}], indirect=True)
async def test_with_encryption_off_the_codec_passes_payloads_through(codec_http: httpx.AsyncClient) -> None:
    for path in ("/codec/encode", "/codec/decode"):
        response = await codec_http.post(path, json=_body(_plain("a@example.com")), headers=OPS)
        assert _payloads(response) == [_plain("a@example.com")]


# --- on the real stack ------------------------------------------------------------------------------


def _all_payloads(message: Message, *, in_search_attributes: bool = False) -> Iterator[tuple[Payload, bool]]:
    """Every Payload nested anywhere in a proto message, and whether it is a search attribute value."""
    if isinstance(message, Payload):
        yield message, in_search_attributes
        return
    inside = in_search_attributes or isinstance(message, SearchAttributes)
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            children = list(value.values())
        elif field.is_repeated:
            children = list(value)
        else:
            children = [value]
        for child in children:
            if isinstance(child, Message):
                yield from _all_payloads(child, in_search_attributes=inside)


async def _raw_history(stack: DevStack, workflow_id: str) -> list[HistoryEvent]:
    """The history as Temporal stores it, read by a client that has no codec."""
    client = await Client.connect(stack.temporal_address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return list(history.events)


async def test_no_plaintext_email_in_the_temporal_history(
    stack: DevStack, portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    local = f"codec-{uuid.uuid4().hex[:12]}"
    email = f"{local}@example.com"
    tag = uuid.uuid4().hex[:8]
    # Personal data besides the email: names provided at registration (workflow input, activity input) and
    # what the applicant typed on the WebSDK page (verified, stored by the profile activity, never in history).
    person = {"firstName": f"Codecfirst{tag}", "lastName": f"Codeclast{tag}", "middleName": f"Codecmiddle{tag}"}
    person |= {"dob": "1960-02-29", "address.street": f"{tag} Codec Street", "address.town": f"Codectown{tag}"}
    body = await graphql(
        portal,
        REGISTER,
        {
            "input": {
                "email": email,
                "customerType": "INDIVIDUAL",
                "firstName": person["firstName"],
                "lastName": person["lastName"],
            }
        },
    )
    assert "errors" not in body, body
    registered = body["data"]["customerRegister"]["customer"]
    waiting = await wait_for_stage(portal, registered["id"], "AWAITING_KYC")
    await fill_in(waiting["kyc"]["verificationUrl"], person)
    customer = await finish_onboarding(portal, registered["id"])  # registration update, activities, KYC signals
    events = await _raw_history(stack, customer["onboarding"]["workflowId"])
    assert len(events) > 20
    personal = [local, *person.values()]

    kinds: set[str] = set()
    for event in events:
        raw = event.SerializeToString()
        for secret in personal:
            assert secret.encode() not in raw, (
                f"plaintext personal data in event {event.event_id} ({event.WhichOneof('attributes')})"
            )
        if event.HasField("marker_recorded_event_attributes"):
            # A patch marker (workflow.patched) is written by the SDK's core, outside the codec: it must
            # carry nothing but the patch id.
            marker = event.marker_recorded_event_attributes
            assert marker.marker_name == "core_patch", marker.marker_name
            datas = [p.data for payloads in marker.details.values() for p in payloads.payloads]
            assert all(set(json.loads(d)) <= {"id", "deprecated"} for d in datas), datas
            kinds.add("marker_recorded_event_attributes")
            continue
        for payload, is_search_attribute in _all_payloads(event):
            if not is_search_attribute:  # indexed by the server, never personal data (see search_attributes.py)
                assert payload.metadata["encoding"] == ENCRYPTED_ENCODING, (event.event_id, dict(payload.metadata))
                kinds.add(str(event.WhichOneof("attributes")))
    assert {
        "workflow_execution_started_event_attributes",
        "activity_task_scheduled_event_attributes",
        "activity_task_completed_event_attributes",
        "workflow_execution_signaled_event_attributes",
        "workflow_execution_update_accepted_event_attributes",
        "marker_recorded_event_attributes",  # the verified-profile patch
    } <= kinds

    # Every payload (the API's start, the worker's activities, signals, updates) is under the customer's own key.
    key_id = await database.fetchval("SELECT key_id FROM customer_data_keys WHERE customer_id = $1", registered["id"])
    assert key_id is not None and key_id.startswith(CUSTOMER_KEY_PREFIX)
    key_ids = {
        payload.metadata[KEY_ID_METADATA].decode()
        for event in events
        for payload, is_search_attribute in _all_payloads(event)
        if not is_search_attribute and payload.metadata.get("encoding") == ENCRYPTED_ENCODING
    }
    assert key_ids == {key_id}

    started = events[0].workflow_execution_started_event_attributes
    master_only = data_converter(Settings(payload_encryption_keys=stack.child_env["PAYLOAD_ENCRYPTION_KEYS"]))
    with pytest.raises(PayloadDecryptionError, match="no access to customer keys"):
        await master_only.decode(started.input.payloads)
    store = DataKeyStore(
        database, stack.child_env["DATABASE_URL"], parse_keys(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"])
    )
    converter = data_converter(
        Settings(payload_encryption_keys=stack.child_env["PAYLOAD_ENCRYPTION_KEYS"]), data_keys=store
    )
    (workflow_input,) = await converter.decode(started.input.payloads)
    assert workflow_input["registration"]["email"] == email

    # The Temporal UI's view: the same payloads through the API's codec server, as ops.
    ops_token = await client_token(stack, "ops", "ops-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        response = await http.post(
            "/codec/decode",
            json=json_format.MessageToDict(started.input),
            headers={
                "Authorization": f"Bearer {ops_token}",
                "X-Namespace": "default",
                "Origin": stack.temporal_ui_url,
            },
        )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == stack.temporal_ui_url
    (decoded,) = json_format.ParseDict(response.json(), Payloads()).payloads
    assert json.loads(decoded.data)["registration"]["email"] == email


async def test_codec_endpoints_need_an_ops_token(stack: DevStack) -> None:
    sealed = await EncryptionCodec.from_spec(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"]).encode(  # type: ignore[union-attr]
        [_plain("ops-only@example.com")]
    )
    body = _body(*sealed)
    portal_token = await client_token(stack, "portal", "portal-dev-secret")
    ops_token = await client_token(stack, "ops", "ops-dev-secret")
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.post("/codec/decode", json=body)).status_code == 401
        assert (
            await http.post("/codec/decode", json=body, headers={"Authorization": "Bearer not.a.jwt"})
        ).status_code == 401
        forbidden = await http.post("/codec/decode", json=body, headers={"Authorization": f"Bearer {portal_token}"})
        assert forbidden.status_code == 403
        allowed = await http.post("/codec/decode", json=body, headers={"Authorization": f"Bearer {ops_token}"})
        assert allowed.status_code == 200
        assert _payloads(allowed) == [_plain("ops-only@example.com")]
        bad = await http.post("/codec/decode", content=b"{not json", headers={"Authorization": f"Bearer {ops_token}"})
        assert bad.status_code == 400


async def test_the_dev_servers_ui_decodes_through_the_api(stack: DevStack) -> None:
    async with httpx.AsyncClient() as http:
        settings = (await http.get(f"{stack.temporal_ui_url}/api/v1/settings")).json()
    assert settings["Codec"]["Endpoint"] == f"{stack.api_url}/codec"


async def test_codec_cors_admits_only_the_temporal_ui(stack: DevStack) -> None:
    ui_origin = stack.temporal_ui_url
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        for path in ("/codec/decode", "/codec/encode"):
            allowed = await http.options(
                path,
                headers={
                    "Origin": ui_origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": CORS_HEADERS,
                },
            )
            assert allowed.status_code == 200, allowed.text
            assert allowed.headers["access-control-allow-origin"] == ui_origin
            assert allowed.headers["access-control-allow-credentials"] == "true"
            allowed_headers = {h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")}
            assert {"x-namespace", "content-type", "authorization"} <= allowed_headers
            assert "POST" in allowed.headers["access-control-allow-methods"]

            refused = await http.options(
                path,
                headers={
                    "Origin": "http://evil.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": CORS_HEADERS,
                },
            )
            assert refused.status_code >= 400 and "access-control-allow-origin" not in refused.headers
        # A real call from another origin gets no CORS grant, so a browser would not hand it the answer.
        unauthorised = await http.post(
            "/codec/decode", json={"payloads": []}, headers={"Origin": "http://evil.example"}
        )
        assert unauthorised.status_code == 401 and "access-control-allow-origin" not in unauthorised.headers
        # The UI's own origin can read even a refusal (and show it).
        from_ui = await http.post("/codec/decode", json={"payloads": []}, headers={"Origin": ui_origin})
        assert from_ui.status_code == 401 and from_ui.headers["access-control-allow-origin"] == ui_origin
