"""Webhook subscriptions to the published lifecycle events: what ops create, change, rotate, delete, inspect
and replay. Each change that can make deliveries due tells the delivery workflows in its own transaction
(NOTIFY, turned into a `wake` signal by the worker), so the API needs no Temporal call for it."""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

import db.subscriptions
from api.errors import BadUserInput, Conflict, NotFound
from db.customers import Conn
from db.events import DELIVERIES_CHANNEL
from db.subscriptions import Delivery, Subscription
from domain.deliveries import DeliveryStatus, UrlPolicy
from domain.events import unknown_event_types
from integrations.event_webhooks import endpoint_refusal

MAX_DESCRIPTION = 500
MAX_DELIVERIES_PAGE = 200
SECRET_BYTES = 24


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def parse_id(value: str, *, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadUserInput(f"{field}: not a subscription id", field=field) from None


@dataclass(frozen=True)
class CreatedSubscription:
    subscription: Subscription
    secret: str  # shown once, here


class SubscriptionService:
    def __init__(self, pool: asyncpg.Pool, *, policy: UrlPolicy, secret_grace: timedelta) -> None:
        self._pool = pool
        self._policy = policy
        self._secret_grace = secret_grace

    async def create(self, *, url: str, event_types: list[str], description: str) -> CreatedSubscription:
        await self._check(url=url, event_types=event_types, description=description)
        secret = new_secret()
        async with self._pool.acquire() as conn, conn.transaction():
            subscription = await db.subscriptions.create_subscription(
                conn,
                id=str(uuid.uuid4()),
                url=url,
                event_types=sorted(set(event_types)),
                description=description,
                secret=secret,
                now=datetime.now(UTC),
            )
            await _wake(conn, subscription.id)
        return CreatedSubscription(subscription, secret)

    async def all(self) -> list[Subscription]:
        async with self._pool.acquire() as conn:
            return await db.subscriptions.list_subscriptions(conn)

    async def get(self, subscription_id: str) -> Subscription:
        async with self._pool.acquire() as conn:
            return await _found(conn, subscription_id)

    async def update(
        self,
        subscription_id: str,
        *,
        url: str | None,
        event_types: list[str] | None,
        description: str | None,
        enabled: bool | None,
    ) -> Subscription:
        await self._check(url=url, event_types=event_types, description=description)
        async with self._pool.acquire() as conn, conn.transaction():
            updated = await db.subscriptions.update_subscription(
                conn,
                subscription_id,
                now=datetime.now(UTC),
                url=url,
                event_types=sorted(set(event_types)) if event_types is not None else None,
                description=description,
                enabled=enabled,
            )
            if updated is None:
                raise NotFound("no event subscription with this id")
            await _wake(conn, subscription_id)
        return updated

    async def rotate_secret(self, subscription_id: str) -> CreatedSubscription:
        """A new secret; the old one still signs (beside it) until the grace period ends."""
        secret, now = new_secret(), datetime.now(UTC)
        async with self._pool.acquire() as conn:
            rotated = await db.subscriptions.rotate_secret(
                conn, subscription_id, secret=secret, previous_valid_until=now + self._secret_grace, now=now
            )
        if rotated is None:
            raise NotFound("no event subscription with this id")
        return CreatedSubscription(rotated, secret)

    async def delete(self, subscription_id: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.subscriptions.delete_subscription(conn, subscription_id):
                raise NotFound("no event subscription with this id")
            await _wake(conn, subscription_id)  # its workflow finds it gone and ends

    async def deliveries(
        self, subscription_id: str, *, status: DeliveryStatus | None, first: int, before: int | None
    ) -> list[Delivery]:
        if not 1 <= first <= MAX_DELIVERIES_PAGE:
            raise BadUserInput(f"first: between 1 and {MAX_DELIVERIES_PAGE}", field="first")
        async with self._pool.acquire() as conn:
            await _found(conn, subscription_id)
            return await db.subscriptions.list_deliveries(
                conn, subscription_id, status=status, before_id=before, limit=first
            )

    async def replay_delivery(self, delivery_id: int) -> Delivery:
        """Due again now with a fresh retry schedule, whatever its status; the receiver gets the same id."""
        async with self._pool.acquire() as conn, conn.transaction():
            delivery = await db.subscriptions.get_delivery(conn, delivery_id)
            if delivery is None:
                raise NotFound("no event delivery with this id")
            _enabled(await _found(conn, delivery.subscription_id))
            await db.subscriptions.replay_delivery(conn, delivery_id)
            await _wake(conn, delivery.subscription_id)
            replayed = await db.subscriptions.get_delivery(conn, delivery_id)
        assert replayed is not None
        return replayed

    async def replay_since(self, subscription_id: str, since: datetime) -> int:
        if since.tzinfo is None:
            raise BadUserInput("since: give a time zone (e.g. 2026-12-01T00:00:00Z)", field="since")
        if since > datetime.now(UTC):
            raise BadUserInput("since: in the future", field="since")
        async with self._pool.acquire() as conn, conn.transaction():
            subscription = _enabled(await _found(conn, subscription_id))
            count = await db.subscriptions.replay_since(conn, subscription, since)
            await _wake(conn, subscription_id)
        return count

    async def _check(self, *, url: str | None, event_types: list[str] | None, description: str | None) -> None:
        if url is not None and (why := await endpoint_refusal(url, self._policy)) is not None:
            raise BadUserInput(f"url: {why}", field="url")
        if event_types is not None and (unknown := unknown_event_types(event_types)):
            raise BadUserInput(f"eventTypes: unknown event types {unknown}", field="eventTypes")
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise BadUserInput(f"description: at most {MAX_DESCRIPTION} characters", field="description")


async def _found(conn: Conn, subscription_id: str) -> Subscription:
    subscription = await db.subscriptions.get_subscription(conn, subscription_id)
    if subscription is None:
        raise NotFound("no event subscription with this id")
    return subscription


def _enabled(subscription: Subscription) -> Subscription:
    if not subscription.enabled:
        raise Conflict("the subscription is disabled: enable it (eventSubscriptionUpdate) before replaying")
    return subscription


async def _wake(conn: Conn, subscription_id: str) -> None:
    """On commit, the worker's waker signals the subscription's delivery workflow."""
    await conn.execute("SELECT pg_notify($1, $2)", DELIVERIES_CHANNEL, subscription_id)
