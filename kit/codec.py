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

Errors::

    KeyConfigError (ValueError)   PAYLOAD_ENCRYPTION_KEYS is malformed
    PayloadDecryptionError        a payload names an unknown key, or fails authentication
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

if TYPE_CHECKING:
    from kit.settings import Settings

__all__ = [
    "DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS",
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
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Public, in the repository: encrypts the dev stack's and the tests' histories, protects nothing.
DEV_ONLY_KEY_ID = "dev-only-insecure"
DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS = f"{DEV_ONLY_KEY_ID}:CWAhC40g+h41NR3hMvsiFxxRhr4SYHWLH9KHqbxPRg0="

log = structlog.get_logger("codec")


class KeyConfigError(ValueError):
    """PAYLOAD_ENCRYPTION_KEYS is not a list of `id:base64key` with 32-byte keys and unique ids."""


class PayloadDecryptionError(Exception):
    """An encrypted payload names a key we do not hold, or its ciphertext does not authenticate."""


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


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads; encrypts with the first key, decrypts with any by key id."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise KeyConfigError("an encryption codec needs at least one key")
        for key_id, key in keys.items():
            if not KEY_ID.fullmatch(key_id) or len(key) != KEY_BYTES:
                raise KeyConfigError(f"key {key_id!r}: ids are 1-64 of A-Z a-z 0-9 . _ -, keys {KEY_BYTES} bytes")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.key_id = next(iter(keys))
        self._key_id_bytes = self.key_id.encode()

    @classmethod
    def from_spec(cls, spec: str) -> EncryptionCodec | None:
        """The codec for a PAYLOAD_ENCRYPTION_KEYS value, or None when it is blank."""
        keys = parse_keys(spec)
        return cls(keys) if keys else None

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(payload) for payload in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(nonce, payload.SerializeToString(), self._key_id_bytes)
        return Payload(
            metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: self._key_id_bytes},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
            return payload  # written before encryption was enabled, or by a client without it
        key_id_bytes = payload.metadata.get(KEY_ID_METADATA, b"")
        key_id = key_id_bytes.decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r}, which is not in PAYLOAD_ENCRYPTION_KEYS"
                f" (known: {', '.join(self._ciphers)})"
            )
        if len(payload.data) <= NONCE_BYTES:
            raise PayloadDecryptionError(f"encrypted payload (key {key_id!r}) is truncated")
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id_bytes)
        except InvalidTag:
            raise PayloadDecryptionError(f"encrypted payload (key {key_id!r}) failed authentication") from None
        return Payload.FromString(plain)


def data_converter(settings: Settings) -> DataConverter:
    """The one data converter: pydantic, plus encryption (and encrypted failure messages) when keys are set."""
    codec = EncryptionCodec.from_spec(settings.payload_encryption_keys)
    if codec is None:
        log.warning("payload encryption is OFF: PAYLOAD_ENCRYPTION_KEYS is empty")
        return pydantic_data_converter
    if codec.key_id == DEV_ONLY_KEY_ID:
        log.warning("payload encryption uses the public dev-only key; set PAYLOAD_ENCRYPTION_KEYS in production")
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        # Failure messages and stack traces can quote personal data; move them into the encrypted attributes.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
