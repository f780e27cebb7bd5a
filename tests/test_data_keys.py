"""Per-customer payload keys (crypto-shredding) against the stack's real PostgreSQL: chosen from the SDK's
serialization context, opened without it by any process, shredded for one customer only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext

from db.data_keys import DataKeyStore
from dev.stack import DevStack
from domain.customer import workflow_id_for
from kit.codec import (
    CUSTOMER_KEY_PREFIX,
    KEY_ID_METADATA,
    DataKeyErased,
    EncryptionCodec,
    PayloadDecryptionError,
    data_converter,
    parse_keys,
)
from kit.settings import Settings

NOTIFICATION_DEADLINE_SECONDS = 10.0


def _plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


def _workflow(customer_id: str) -> WorkflowSerializationContext:
    return WorkflowSerializationContext(namespace="default", workflow_id=workflow_id_for(customer_id))


def _activity(customer_id: str) -> ActivitySerializationContext:
    return ActivitySerializationContext(
        namespace="default",
        activity_id="1",
        activity_type="record_change",
        activity_task_queue="q",
        workflow_id=workflow_id_for(customer_id),
        workflow_type="CustomerWorkflow",
        is_local=False,
    )


@pytest.fixture
async def stores(stack: DevStack, database: asyncpg.Pool) -> AsyncIterator[tuple[DataKeyStore, DataKeyStore]]:
    """Two stores on the same database: what two processes (the API and a worker) hold."""
    masters = parse_keys(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"])
    first = DataKeyStore(database, stack.child_env["DATABASE_URL"], masters)
    second = DataKeyStore(database, stack.child_env["DATABASE_URL"], masters)
    await first.start()
    await second.start()
    yield first, second
    await first.aclose()
    await second.aclose()


def _codec(stack: DevStack, store: DataKeyStore) -> EncryptionCodec:
    codec = EncryptionCodec.from_spec(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"], data_keys=store)
    assert codec is not None
    return codec


async def test_the_context_picks_the_customers_key_and_any_process_opens_it_without_context(
    stack: DevStack, stores: tuple[DataKeyStore, DataKeyStore], database: asyncpg.Pool
) -> None:
    api, worker = (_codec(stack, store) for store in stores)
    customer, other = str(uuid.uuid4()), str(uuid.uuid4())

    # Both processes seal at once for a customer without a key yet: one key wins, and both use it.
    by_api, by_worker = await asyncio.gather(
        api.with_context(_workflow(customer)).encode([_plain("a")]),
        worker.with_context(_activity(customer)).encode([_plain("b")]),
    )
    key_id = await database.fetchval("SELECT key_id FROM customer_data_keys WHERE customer_id = $1", customer)
    assert key_id.startswith(CUSTOMER_KEY_PREFIX)
    assert {p.metadata[KEY_ID_METADATA].decode() for p in [*by_api, *by_worker]} == {key_id}
    assert await api.decode([*by_worker]) == [_plain("b")]  # no context needed to open
    assert await worker.decode([*by_api]) == [_plain("a")]

    (others,) = await api.with_context(_workflow(other)).encode([_plain("c")])
    assert others.metadata[KEY_ID_METADATA].decode() not in (key_id, api.key_id)

    # No customer in the context (another workflow, none at all): the master key, as before.
    not_a_customer = WorkflowSerializationContext(namespace="default", workflow_id="nightly-report")
    (master,) = await api.with_context(not_a_customer).encode([_plain("d")])
    (plain_master,) = await api.encode([_plain("e")])
    assert master.metadata[KEY_ID_METADATA].decode() == api.key_id == plain_master.metadata[KEY_ID_METADATA].decode()
    assert await worker.decode([master, plain_master]) == [_plain("d"), _plain("e")]
    # A codec without access to customer keys still opens master-key payloads, never a customer's.
    master_only = EncryptionCodec.from_spec(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"])
    assert master_only is not None
    assert await master_only.decode([master]) == [_plain("d")]
    with pytest.raises(PayloadDecryptionError, match="no access to customer keys"):
        await master_only.decode(by_api)


async def test_the_data_converters_copy_for_a_customer_seals_with_their_key_and_builds_no_new_converters(
    stack: DevStack, stores: tuple[DataKeyStore, DataKeyStore], database: asyncpg.Pool
) -> None:
    store, _ = stores
    converter = data_converter(
        Settings(payload_encryption_keys=stack.child_env["PAYLOAD_ENCRYPTION_KEYS"]), data_keys=store
    )
    customer = str(uuid.uuid4())

    mine = converter.with_context(_activity(customer))
    (sealed,) = await mine.encode(["for this customer only"])
    key_id = await database.fetchval("SELECT key_id FROM customer_data_keys WHERE customer_id = $1", customer)
    assert sealed.metadata[KEY_ID_METADATA].decode() == key_id
    assert await converter.decode([sealed]) == ["for this customer only"]
    # The SDK asks for a copy per activation and activity: it reuses the converters (building them was 6% of
    # the worker's CPU), and a context without a customer changes nothing.
    assert mine.payload_converter is converter.payload_converter
    assert mine.failure_converter is converter.failure_converter
    assert converter.with_context(WorkflowSerializationContext(namespace="default", workflow_id="report")) is converter


async def test_a_process_that_opened_a_customers_payload_seals_their_next_ones_without_the_database(
    stack: DevStack, stores: tuple[DataKeyStore, DataKeyStore]
) -> None:
    """The worker's first task for a new customer opens the API's payload, then seals its answer."""
    api_store, _ = stores
    customer = str(uuid.uuid4())
    sealed = await _codec(stack, api_store).with_context(_workflow(customer)).encode([_plain("registration")])
    own_pool = await asyncpg.create_pool(stack.child_env["DATABASE_URL"], min_size=1, max_size=1)
    worker_store = DataKeyStore(
        own_pool, stack.child_env["DATABASE_URL"], parse_keys(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"])
    )
    await worker_store.start()
    try:
        worker = _codec(stack, worker_store)
        assert await worker.decode(sealed) == [_plain("registration")]
        await own_pool.close()  # from here on, a lookup would fail
        (answer,) = await worker.with_context(_activity(customer)).encode([_plain("answer")])
    finally:
        await worker_store.aclose()
    assert answer.metadata[KEY_ID_METADATA] == sealed[0].metadata[KEY_ID_METADATA]
    assert await _codec(stack, api_store).decode([answer]) == [_plain("answer")]


async def test_a_shredded_key_opens_nothing_anywhere_and_other_customers_are_untouched(
    stack: DevStack, stores: tuple[DataKeyStore, DataKeyStore], database: asyncpg.Pool
) -> None:
    eraser_store, other_store = stores
    eraser, elsewhere = _codec(stack, eraser_store), _codec(stack, other_store)
    erased, kept = str(uuid.uuid4()), str(uuid.uuid4())
    sealed = await eraser.with_context(_workflow(erased)).encode([_plain("erase me")])
    other = await eraser.with_context(_workflow(kept)).encode([_plain("keep me")])
    assert await elsewhere.decode([*sealed, *other]) == [_plain("erase me"), _plain("keep me")]  # now cached

    async with database.acquire() as conn, conn.transaction():
        assert await eraser_store.shred(conn, erased)
    async with database.acquire() as conn:
        assert not await eraser_store.shred(conn, erased)  # a second erasure finds nothing to destroy

    with pytest.raises(DataKeyErased):
        await eraser.decode(sealed)
    with pytest.raises(DataKeyErased):  # nothing is sealed for an erased customer again
        await eraser.with_context(_workflow(erased)).encode([_plain("new")])
    # The other process had the key cached: the notification evicts it.
    async with asyncio.timeout(NOTIFICATION_DEADLINE_SECONDS):
        while True:
            try:
                await elsewhere.decode(sealed)
            except DataKeyErased:
                break
            await asyncio.sleep(0.05)
    with pytest.raises(DataKeyErased):  # it had the key only from opening a payload: it seals nothing either
        await elsewhere.with_context(_workflow(erased)).encode([_plain("new")])
    # A process that never saw the key reads the shredded row.
    fresh = DataKeyStore(
        database, stack.child_env["DATABASE_URL"], parse_keys(stack.child_env["PAYLOAD_ENCRYPTION_KEYS"])
    )
    with pytest.raises(DataKeyErased):
        await _codec(stack, fresh).decode(sealed)
    assert await elsewhere.decode(other) == [_plain("keep me")]
    row = await database.fetchrow(
        "SELECT wrapped_key, shredded_at FROM customer_data_keys WHERE customer_id = $1", erased
    )
    assert row["wrapped_key"] is None and row["shredded_at"] is not None


async def test_shredding_a_customer_without_a_key_leaves_a_shredded_row_so_none_is_ever_made(
    stack: DevStack, stores: tuple[DataKeyStore, DataKeyStore], database: asyncpg.Pool
) -> None:
    store, _ = stores
    codec = _codec(stack, store)
    never_sealed = str(uuid.uuid4())  # erased before any payload of theirs was sealed
    async with database.acquire() as conn, conn.transaction():
        assert not await store.shred(conn, never_sealed)  # there was no key to destroy
    with pytest.raises(DataKeyErased):  # and none is made afterwards
        await codec.with_context(_workflow(never_sealed)).encode([_plain("late")])
    row = await database.fetchrow(
        "SELECT wrapped_key, shredded_at FROM customer_data_keys WHERE customer_id = $1", never_sealed
    )
    assert row is not None and row["wrapped_key"] is None and row["shredded_at"] is not None
