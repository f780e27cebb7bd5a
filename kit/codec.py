"""Payload encryption: no plaintext personal data in Temporal's history.

Every payload the SDK writes (workflow and activity inputs and results, signals, updates, queries,
memos, failure messages) is encrypted here before it leaves the process: the whole serialized
`Payload` proto (its metadata too) is sealed with AES-256-GCM under a random 12-byte nonce and
replaced by a payload marked `encoding: binary/encrypted` that names its key in
`encryption-key-id`. The key id is also the GCM associated data, so a payload cannot be moved to
another key's name.

Rotation: `PAYLOAD_ENCRYPTION_KEYS` lists `id:base64key` pairs, newest first. New payloads use the
first key; any listed key decrypts. To rotate, prepend a new key and keep the old ones for as long
as histories (retention) or running workflows may hold payloads they sealed.

Per-customer keys (crypto-shredding): with a `DataKeys` source (`db.data_keys.DataKeyStore`), the SDK
hands the codec its serialization context (`WithSerializationContext`); a payload of a customer's
workflow (`customer-<id>`, workflow or activity context) is sealed with that customer's own key, whose
id (`customer/...`) it carries, so any codec with the source opens it without context. Erasing the
customer shreds the key: its payloads open nowhere after that. Payloads without a customer, and every
payload written before, keep the master keys.

Errors::

    KeyConfigError (ValueError)   PAYLOAD_ENCRYPTION_KEYS is malformed
    PayloadDecryptionError        a payload names an unknown key, or fails authentication
    └── DataKeyErased             the customer's key was shredded (erasure): nothing opens or seals for them
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, Self

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from domain.customer import customer_id_of_workflow

if TYPE_CHECKING:
    from kit.settings import Settings

__all__ = [
    "CUSTOMER_KEY_PREFIX",
    "DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS",
    "DataKeyErased",
    "DataKeys",
    "ENCRYPTED_ENCODING",
    "KEY_ID_METADATA",
    "EncryptionCodec",
    "KeyConfigError",
    "PayloadDecryptionError",
    "data_converter",
    "parse_keys",
]

ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
# Per-context copies of the data converter kept (one a workflow and one an activity context of each customer
# in flight); past it they are dropped and made again.
CONTEXT_COPIES = 4096
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A customer's key id; "/" is not allowed in master key ids, so the two never collide.
CUSTOMER_KEY_PREFIX = "customer/"

# Public, in the repository: encrypts the dev stack's and the tests' histories, protects nothing.
DEV_ONLY_KEY_ID = "dev-only-insecure"
DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS = f"{DEV_ONLY_KEY_ID}:CWAhC40g+h41NR3hMvsiFxxRhr4SYHWLH9KHqbxPRg0="

log = structlog.get_logger("codec")


class KeyConfigError(ValueError):
    """PAYLOAD_ENCRYPTION_KEYS is not a list of `id:base64key` with 32-byte keys and unique ids."""


class PayloadDecryptionError(Exception):
    """An encrypted payload names a key we do not hold, or its ciphertext does not authenticate."""


class DataKeyErased(PayloadDecryptionError):
    """The customer was erased and their key shredded: their payloads neither open nor are sealed again."""


class DataKeys(Protocol):
    """Where customers' own keys come from (`db.data_keys.DataKeyStore`)."""

    async def key_for_customer(self, customer_id: str) -> tuple[str, AESGCM]: ...

    async def key_by_id(self, key_id: str) -> AESGCM: ...


def parse_keys(spec: str) -> dict[str, bytes]:
    """`id1:base64key1,id2:base64key2` -> {id: key}, newest (first) first; blank -> {} (no encryption)."""
    keys: dict[str, bytes] = {}
    entries = [entry.strip() for entry in spec.split(",")] if spec.strip() else []
    for position, entry in enumerate(entries, start=1):
        key_id, separator, encoded = (part.strip() for part in entry.partition(":"))
        where = f"PAYLOAD_ENCRYPTION_KEYS entry {position}"
        if not separator or not key_id or not encoded:
            raise KeyConfigError(f"{where} is not `id:base64key`")
        if not KEY_ID.fullmatch(key_id):
            raise KeyConfigError(f"{where}: key id {key_id!r} must be 1-64 of A-Z a-z 0-9 . _ -")
        if key_id in keys:
            raise KeyConfigError(f"{where}: key id {key_id!r} is listed twice")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyConfigError(f"{where} ({key_id}): the key is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyConfigError(f"{where} ({key_id}): the key is {len(key)} bytes, AES-256 needs {KEY_BYTES}")
        keys[key_id] = key
    return keys


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM over whole payloads; encrypts with the first key (or the customer's, in a customer's
    context), decrypts with any by key id."""

    def __init__(
        self, keys: Mapping[str, bytes], *, data_keys: DataKeys | None = None, customer_id: str | None = None
    ) -> None:
        if not keys:
            raise KeyConfigError("an encryption codec needs at least one key")
        for key_id, key in keys.items():
            if not KEY_ID.fullmatch(key_id) or len(key) != KEY_BYTES:
                raise KeyConfigError(f"key {key_id!r}: ids are 1-64 of A-Z a-z 0-9 . _ -, keys {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.key_id = next(iter(keys))
        self._key_id_bytes = self.key_id.encode()
        self.data_keys = data_keys
        self.customer_id = customer_id if data_keys is not None else None

    @classmethod
    def from_spec(cls, spec: str, *, data_keys: DataKeys | None = None) -> EncryptionCodec | None:
        """The codec for a PAYLOAD_ENCRYPTION_KEYS value, or None when it is blank."""
        keys = parse_keys(spec)
        return cls(keys, data_keys=data_keys) if keys else None

    @property
    def master_keys(self) -> Mapping[str, bytes]:
        return self._keys

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        """The SDK calls this per workflow and activity: a customer's workflow gets the customer's key."""
        workflow_id = (
            context.workflow_id
            if isinstance(context, (WorkflowSerializationContext, ActivitySerializationContext))
            else None
        )
        customer_id = customer_id_of_workflow(workflow_id) if workflow_id else None
        if self.data_keys is None or customer_id == self.customer_id:
            return self
        # The SDK asks for every activation and activity: share the checked keys and ciphers, change the customer.
        derived = copy.copy(self)
        derived.customer_id = customer_id
        return derived

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if self.customer_id is None or self.data_keys is None or not payloads:
            return [self._seal(payload, self._ciphers[self.key_id], self._key_id_bytes) for payload in payloads]
        key_id, cipher = await self.data_keys.key_for_customer(self.customer_id)
        return [self._seal(payload, cipher, key_id.encode()) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self._decrypt(payload) for payload in payloads]

    @staticmethod
    def _seal(payload: Payload, cipher: AESGCM, key_id: bytes) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: key_id}, data=nonce + sealed)

    async def _cipher_for(self, key_id: str) -> AESGCM:
        if key_id.startswith(CUSTOMER_KEY_PREFIX):
            if self.data_keys is None:
                raise PayloadDecryptionError(
                    f"payload encrypted with customer key {key_id!r}; this codec has no access to customer keys"
                )
            return await self.data_keys.key_by_id(key_id)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r}, which is not in PAYLOAD_ENCRYPTION_KEYS"
                f" (known: {', '.join(self._ciphers)})"
            )
        return cipher

    async def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
            return payload  # written before encryption was enabled, or by a client without it
        key_id_bytes = payload.metadata.get(KEY_ID_METADATA, b"")
        key_id = key_id_bytes.decode("utf-8", "replace")
        cipher = await self._cipher_for(key_id)
        if len(payload.data) <= NONCE_BYTES:
            raise PayloadDecryptionError(f"encrypted payload (key {key_id!r}) is truncated")
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id_bytes)
        except InvalidTag:
            raise PayloadDecryptionError(f"encrypted payload (key {key_id!r}) failed authentication") from None
        return Payload.FromString(plain)


def data_converter(settings: Settings, *, data_keys: DataKeys | None = None) -> DataConverter:
    """The one data converter: pydantic, plus encryption (and encrypted failure messages) when keys are set;
    with `data_keys`, each customer's payloads under the customer's own key."""
    codec = EncryptionCodec.from_spec(settings.payload_encryption_keys, data_keys=data_keys)
    return converter_for(codec)


@dataclasses.dataclass(frozen=True)
class _ContextDataConverter(DataConverter):
    """`DataConverter` whose per-context copies are cheap.

    The SDK asks for a copy per workflow activation, and per payload of each activity command (several times
    each: encode, store, reference). Whenever a part changes with the context (our codec does: a customer's
    key), the SDK's copy is `dataclasses.replace`, which builds a new pydantic payload converter and failure
    converter only to overwrite them with the original's: 6% of the worker's CPU in `make bench`'s onboarding
    row (py-spy). Here a copy is shallow, made once per context and kept (a few thousand at most); each part
    still gets the context exactly as the SDK gives it."""

    _copies: dict[SerializationContext, DataConverter] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def with_context(self, context: SerializationContext) -> Self:
        derived = self._copies.get(context)
        if derived is None:
            if len(self._copies) >= CONTEXT_COPIES:
                self._copies.clear()
            derived = self._copies[context] = self._copy_for(context)
        return derived  # type: ignore[return-value]

    def _copy_for(self, context: SerializationContext) -> DataConverter:
        parts = {
            name: part.with_context(context)
            for name in ("payload_converter", "payload_codec", "failure_converter", "external_storage")
            if isinstance(part := getattr(self, name), WithSerializationContext)
        }
        if all(part is getattr(self, name) for name, part in parts.items()):
            return self
        derived = copy.copy(self)
        for name, part in parts.items():
            object.__setattr__(derived, name, part)
        return derived


def converter_for(codec: EncryptionCodec | None) -> DataConverter:
    """The pydantic converter with this codec (None: encryption off)."""
    if codec is None:
        log.warning("payload encryption is OFF: PAYLOAD_ENCRYPTION_KEYS is empty")
        return pydantic_data_converter
    if codec.key_id == DEV_ONLY_KEY_ID:
        log.warning("payload encryption uses the public dev-only key; set PAYLOAD_ENCRYPTION_KEYS in production")
    return _ContextDataConverter(
        payload_converter_class=pydantic_data_converter.payload_converter_class,
        payload_codec=codec,
        # Failure messages and stack traces can quote personal data; move them into the encrypted attributes.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
