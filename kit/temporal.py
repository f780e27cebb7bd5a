"""Connecting to Temporal the same way from every process: one namespace, one data converter.

The converter is pydantic plus payload encryption (`kit.codec`), so the API, the worker and the
tests write no plaintext personal data into Temporal and read each other's payloads.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from kit.codec import DataKeys, data_converter
from kit.settings import Settings
from workflows.visibility import ALL_KEYS


async def connect(settings: Settings, *, lazy: bool = False, data_keys: DataKeys | None = None) -> Client:
    """A client with the pydantic converter, encrypting payloads with `settings.payload_encryption_keys`,
    and each customer's under the customer's own key from `data_keys` (without it, a customer's payloads
    are sealed with the master key and those sealed with a customer key do not open).

    `lazy` lets the API start (and report 503) while Temporal is down.
    """
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings, data_keys=data_keys),
        lazy=lazy,
    )


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Registers our search attributes if the server lacks them (the dev server gets them as flags)."""
    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
        for key in ALL_KEYS
        if key.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )


def is_unreachable(exc: BaseException) -> bool:
    """Whether a client call failed because Temporal cannot be reached (not because it said no)."""
    if isinstance(exc, RPCError):
        return exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
    # A lazy client that has never connected raises this from every call until it can.
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect")
