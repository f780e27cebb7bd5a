"""Each customer's own payload key (migration 0009): made on first use, wrapped by a master key, cached, shredded.

The codec (`kit.codec`) seals a customer's payloads with the key `key_for_customer` gives and opens any
payload by the key id it carries (`key_by_id`), so the codec server needs no workflow context. Keys are
cached per process for the process's life; `shred` (erasure) removes the wrapped key in the caller's
transaction and sends `NOTIFY customer_data_key_shredded`, which every process's listener turns into an
eviction. While a process's listener is not connected it caches nothing (each lookup reads the row), so
a shredded key never stays usable in a process that missed the notification.

Errors::

    DataKeyErased (PayloadDecryptionError)   the customer's key was shredded: nothing opens or seals for it
    PayloadDecryptionError                   an unknown key id, or a master key no longer listed
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Mapping

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from db.customers import Conn
from kit.codec import (
    CUSTOMER_KEY_PREFIX,
    KEY_BYTES,
    NONCE_BYTES,
    DataKeyErased,
    PayloadDecryptionError,
    parse_keys,
)

__all__ = ["SHRED_CHANNEL", "DataKeyStore", "data_key_store"]

SHRED_CHANNEL = "customer_data_key_shredded"
# The customer's key row, made from $1/$3/$4 if it has none; a shredded row is returned as it is (and refused).
_KEY_OF_CUSTOMER_OR_NEW = """
    WITH made AS (
        INSERT INTO customer_data_keys (key_id, customer_id, master_key_id, wrapped_key)
        VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO NOTHING
        RETURNING key_id, master_key_id, wrapped_key
    )
    SELECT key_id, master_key_id, wrapped_key FROM made
    UNION ALL
    SELECT key_id, master_key_id, wrapped_key FROM customer_data_keys WHERE customer_id = $2
    LIMIT 1
"""

log = structlog.get_logger("data_keys")


class DataKeyStore:
    """Per-customer data keys in PostgreSQL, wrapped with the first of `master_keys` (any listed unwraps)."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, master_keys: Mapping[str, bytes]) -> None:
        if not master_keys:
            raise ValueError("per-customer keys are wrapped by a master key: PAYLOAD_ENCRYPTION_KEYS is empty")
        self._pool = pool
        self._dsn = dsn  # the listener's own connection: a pooled one would be handed to others
        self._masters = {key_id: AESGCM(key) for key_id, key in master_keys.items()}
        self._wrapping_key_id = next(iter(master_keys))
        self._by_customer: dict[str, tuple[str, AESGCM]] = {}
        self._by_key_id: dict[str, AESGCM] = {}
        self._listener: asyncpg.Connection | None = None
        # Bumped by every eviction: a lookup that raced a shred (read before, finished after) is not cached.
        self._generation = 0
        self._listen_lock = asyncio.Lock()

    async def start(self) -> None:
        """Listens for shreds; a failure leaves the store working uncached (and retried on the next lookup)."""
        await self._ensure_listening()

    async def aclose(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(Exception):  # closing a connection that is already gone
                await listener.close()

    async def key_for_customer(self, customer_id: str) -> tuple[str, AESGCM]:
        """The customer's key id and cipher, made (race-free: one row per customer wins) on first use."""
        cached = self._by_customer.get(customer_id)
        if cached is not None:
            return cached
        caching, generation = await self._ensure_listening(), self._generation
        key_id = f"{CUSTOMER_KEY_PREFIX}{secrets.token_hex(12)}"
        # One round trip (a registration's first payload waits for it): the row that exists, else ours.
        row = await self._pool.fetchrow(
            _KEY_OF_CUSTOMER_OR_NEW,
            key_id,
            customer_id,
            self._wrapping_key_id,
            self._wrap(key_id, os.urandom(KEY_BYTES)),
        )
        if row is None:  # a concurrent first use won after this statement's snapshot: its row is committed now
            row = await self._pool.fetchrow(
                "SELECT key_id, master_key_id, wrapped_key FROM customer_data_keys WHERE customer_id = $1",
                customer_id,
            )
            assert row is not None
        cipher = self._unwrap(row["key_id"], row["master_key_id"], row["wrapped_key"])
        if caching and generation == self._generation:
            self._by_customer[customer_id] = (row["key_id"], cipher)
            self._by_key_id[row["key_id"]] = cipher
        return row["key_id"], cipher

    async def key_by_id(self, key_id: str) -> AESGCM:
        cached = self._by_key_id.get(key_id)
        if cached is not None:
            return cached
        caching, generation = await self._ensure_listening(), self._generation
        row = await self._pool.fetchrow(
            "SELECT customer_id, master_key_id, wrapped_key FROM customer_data_keys WHERE key_id = $1", key_id
        )
        if row is None:
            raise PayloadDecryptionError(f"payload encrypted with customer key {key_id!r}, which does not exist")
        cipher = self._unwrap(key_id, row["master_key_id"], row["wrapped_key"])
        if caching and generation == self._generation:
            # Also as the customer's key: a worker opens a new customer's first payloads, then seals its answers
            # with it (a round trip fewer in each registration's first workflow task).
            self._by_key_id[key_id] = cipher
            self._by_customer[str(row["customer_id"])] = (key_id, cipher)
        return cipher

    async def shred(self, conn: Conn, customer_id: str) -> bool:
        """Destroys the customer's key in the caller's transaction (the NOTIFY goes out at its commit); whether
        there was a usable one to destroy. Without one, a shredded row is left, so none is ever made. Evicts it
        here at once; other processes on the notification."""
        key_id = await conn.fetchval(
            """
            UPDATE customer_data_keys SET wrapped_key = NULL, master_key_id = NULL, shredded_at = now()
            WHERE customer_id = $1 AND shredded_at IS NULL RETURNING key_id
            """,
            customer_id,
        )
        destroyed = key_id is not None
        if key_id is None:
            # No key yet (the customer never had a payload, or its row is shredded already): a shredded row, so no
            # later encode makes a usable key for them; one made concurrently meanwhile is shredded by the upsert.
            key_id = await conn.fetchval(
                """
                INSERT INTO customer_data_keys (key_id, customer_id, master_key_id, wrapped_key, shredded_at)
                VALUES ($2, $1, NULL, NULL, now())
                ON CONFLICT (customer_id) DO UPDATE SET wrapped_key = NULL, master_key_id = NULL,
                    shredded_at = coalesce(customer_data_keys.shredded_at, now())
                RETURNING key_id
                """,
                customer_id,
                f"{CUSTOMER_KEY_PREFIX}{secrets.token_hex(12)}",
            )
        await conn.execute("SELECT pg_notify($1, $2)", SHRED_CHANNEL, key_id)
        self._evict(key_id)
        self._by_customer.pop(customer_id, None)
        return destroyed

    def _wrap(self, key_id: str, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._masters[self._wrapping_key_id].encrypt(nonce, key, key_id.encode())

    def _unwrap(self, key_id: str, master_key_id: str | None, wrapped: bytes | None) -> AESGCM:
        if wrapped is None or master_key_id is None:
            raise DataKeyErased(f"customer key {key_id!r} was shredded when the customer was erased")
        master = self._masters.get(master_key_id)
        if master is None:
            raise PayloadDecryptionError(
                f"customer key {key_id!r} is wrapped by master key {master_key_id!r},"
                " which is not in PAYLOAD_ENCRYPTION_KEYS"
            )
        try:
            return AESGCM(master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode()))
        except InvalidTag:
            raise PayloadDecryptionError(f"customer key {key_id!r} failed authentication") from None

    def _evict(self, key_id: str | None) -> None:
        self._generation += 1
        if key_id is None:
            return
        self._by_key_id.pop(key_id, None)
        for customer_id, (cached_id, _) in list(self._by_customer.items()):
            if cached_id == key_id:
                del self._by_customer[customer_id]

    def _on_shredded(self, _conn: object, _pid: int, _channel: str, key_id: object) -> None:
        self._evict(str(key_id))

    def _on_listener_lost(self, _conn: object) -> None:
        # A notification may have been missed: forget everything and cache again only once listening.
        self._listener = None
        self._generation += 1
        self._by_customer.clear()
        self._by_key_id.clear()

    async def _ensure_listening(self) -> bool:
        """Whether lookups may be cached: only while this process hears every shred."""
        if self._listener is not None and not self._listener.is_closed():
            return True
        async with self._listen_lock:
            if self._listener is not None and not self._listener.is_closed():
                return True
            self._on_listener_lost(None)
            try:
                listener = await asyncpg.connect(self._dsn)
                await listener.add_listener(SHRED_CHANNEL, self._on_shredded)
            except Exception as exc:  # an outage: uncached reads still answer (or fail) on their own
                log.warning("data key listener not connected; keys are not cached", error=type(exc).__name__)
                return False
            listener.add_termination_listener(self._on_listener_lost)
            self._listener = listener
            return True


def data_key_store(pool: asyncpg.Pool, dsn: str, master_spec: str) -> DataKeyStore | None:
    """The store for PAYLOAD_ENCRYPTION_KEYS `master_spec`; None when encryption is off (nothing to wrap with)."""
    masters = parse_keys(master_spec)
    return DataKeyStore(pool, dsn, masters) if masters else None
