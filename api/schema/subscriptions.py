"""Webhook subscriptions in GraphQL (ops only): the types, inputs, reads and changes (`api/subscriptions.py`
does them). Event types are the published CloudEvents types (`customer.activated`, ...); none means all."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from api.errors import BadUserInput
from api.schema.permissions import Context, OpsOnly
from api.subscriptions import MAX_DELIVERIES_PAGE, parse_id
from db.subscriptions import Delivery, Subscription
from domain.deliveries import Attempt, DeliveryStatus

ATTEMPTS_SHOWN = 20  # the latest of a delivery's attempts (all are kept)

strawberry.enum(DeliveryStatus, name="EventDeliveryStatus")


@strawberry.type(description="An endpoint that receives the published lifecycle events, signed (Standard Webhooks).")
class EventSubscription:
    id: strawberry.ID
    url: str
    event_types: list[str] = strawberry.field(description="The CloudEvents types it receives; empty: every type.")
    description: str
    enabled: bool
    disabled_reason: str | None = strawberry.field(description="Why it was disabled automatically, if it was.")
    previous_secret_valid_until: datetime | None = strawberry.field(
        description="After a rotation, deliveries are also signed with the previous secret until then."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Subscription) -> EventSubscription:
        return cls(
            id=strawberry.ID(row.id),
            url=row.url,
            event_types=row.event_types,
            description=row.description,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            previous_secret_valid_until=row.previous_secret_expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class EventDeliveryAttempt:
    attempted_at: datetime
    status_code: int | None = strawberry.field(description="null: no HTTP answer (see error).")
    latency_ms: int
    response_head: str = strawberry.field(description="The first 256 bytes of the endpoint's answer.")
    error: str | None

    @classmethod
    def from_row(cls, row: Attempt) -> EventDeliveryAttempt:
        return cls(
            attempted_at=row.attempted_at,
            status_code=row.status_code,
            latency_ms=row.latency_ms,
            response_head=row.response_head,
            error=row.error,
        )


@strawberry.type(description="One event owed to one subscription, with its attempts.")
class EventDelivery:
    id: strawberry.ID
    subscription_id: strawberry.ID
    event_id: strawberry.ID = strawberry.field(description="The CloudEvent's id, also its `webhook-id`.")
    event_type: str
    customer_id: strawberry.ID
    sequence: int
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[EventDeliveryAttempt] = strawberry.field(
        description=f"The latest {ATTEMPTS_SHOWN} attempts, oldest first."
    )

    @classmethod
    def from_row(cls, row: Delivery) -> EventDelivery:
        return cls(
            id=strawberry.ID(str(row.id)),
            subscription_id=strawberry.ID(row.subscription_id),
            event_id=strawberry.ID(row.event_id),
            event_type=row.event_type,
            customer_id=strawberry.ID(row.customer_id),
            sequence=row.sequence,
            status=row.status,
            attempt_count=len(row.attempts),
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            attempts=[EventDeliveryAttempt.from_row(a) for a in row.attempts[-ATTEMPTS_SHOWN:]],
        )


@strawberry.type
class EventSubscriptionCreatePayload:
    subscription: EventSubscription
    secret: str = strawberry.field(description="The signing secret (whsec_...): shown only here; keep it.")


@strawberry.type
class EventSubscriptionPayload:
    subscription: EventSubscription


@strawberry.type
class EventSubscriptionDeletePayload:
    id: strawberry.ID


@strawberry.type
class EventDeliveryReplayPayload:
    replayed: int = strawberry.field(description="How many deliveries are due again.")
    delivery: EventDelivery | None = strawberry.field(description="The delivery, when one was replayed by id.")


@strawberry.input
class EventSubscriptionCreateInput:
    url: str = strawberry.field(description="https; private, loopback and link-local addresses are refused.")
    event_types: list[str] = strawberry.field(default_factory=list, description="Empty: every type.")
    description: str = ""


@strawberry.input(description="Changes what is given; enabling clears an automatic disable.")
class EventSubscriptionUpdateInput:
    id: strawberry.ID
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


@strawberry.input
class EventSubscriptionIdInput:
    id: strawberry.ID


@strawberry.input(description="Either `deliveryId`, or `subscriptionId` and `since` (every event since then).")
class EventDeliveryReplayInput:
    delivery_id: strawberry.ID | None = None
    subscription_id: strawberry.ID | None = None
    since: datetime | None = None


def _delivery_id(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadUserInput(f"{field}: not a delivery id", field=field) from None


@strawberry.type
class SubscriptionQuery:
    @strawberry.field(permission_classes=[OpsOnly])
    async def event_subscriptions(self, info: Info[Context, Any]) -> list[EventSubscription]:
        return [EventSubscription.from_row(s) for s in await info.context.services.subscriptions.all()]

    @strawberry.field(
        permission_classes=[OpsOnly],
        description=f"A subscription's deliveries, newest first ({MAX_DELIVERIES_PAGE} at most a page); "
        "`before` is the id of the last delivery of the previous page.",
    )
    async def event_deliveries(
        self,
        info: Info[Context, Any],
        subscription_id: strawberry.ID,
        status: DeliveryStatus | None = None,
        first: int = 50,
        before: strawberry.ID | None = None,
    ) -> list[EventDelivery]:
        deliveries = await info.context.services.subscriptions.deliveries(
            parse_id(subscription_id, field="subscriptionId"),
            status=status,
            first=first,
            before=_delivery_id(before, "before") if before is not None else None,
        )
        return [EventDelivery.from_row(d) for d in deliveries]


@strawberry.type
class SubscriptionMutation:
    @strawberry.mutation(permission_classes=[OpsOnly])
    async def event_subscription_create(
        self, info: Info[Context, Any], input: EventSubscriptionCreateInput
    ) -> EventSubscriptionCreatePayload:
        created = await info.context.services.subscriptions.create(
            url=input.url, event_types=input.event_types, description=input.description
        )
        return EventSubscriptionCreatePayload(
            subscription=EventSubscription.from_row(created.subscription), secret=created.secret
        )

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def event_subscription_update(
        self, info: Info[Context, Any], input: EventSubscriptionUpdateInput
    ) -> EventSubscriptionPayload:
        updated = await info.context.services.subscriptions.update(
            parse_id(input.id, field="id"),
            url=input.url,
            event_types=input.event_types,
            description=input.description,
            enabled=input.enabled,
        )
        return EventSubscriptionPayload(subscription=EventSubscription.from_row(updated))

    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="A new secret (shown only here); the previous one keeps signing beside it for the grace period.",
    )
    async def event_subscription_secret_rotate(
        self, info: Info[Context, Any], input: EventSubscriptionIdInput
    ) -> EventSubscriptionCreatePayload:
        rotated = await info.context.services.subscriptions.rotate_secret(parse_id(input.id, field="id"))
        return EventSubscriptionCreatePayload(
            subscription=EventSubscription.from_row(rotated.subscription), secret=rotated.secret
        )

    @strawberry.mutation(permission_classes=[OpsOnly], description="Deletes it with its deliveries and attempts.")
    async def event_subscription_delete(
        self, info: Info[Context, Any], input: EventSubscriptionIdInput
    ) -> EventSubscriptionDeletePayload:
        subscription_id = parse_id(input.id, field="id")
        await info.context.services.subscriptions.delete(subscription_id)
        return EventSubscriptionDeletePayload(id=strawberry.ID(subscription_id))

    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="Delivers again, with the same event ids: one delivery, or every event since a time.",
    )
    async def event_delivery_replay(
        self, info: Info[Context, Any], input: EventDeliveryReplayInput
    ) -> EventDeliveryReplayPayload:
        service = info.context.services.subscriptions
        if input.delivery_id is not None and input.subscription_id is None and input.since is None:
            delivery = await service.replay_delivery(_delivery_id(input.delivery_id, "deliveryId"))
            return EventDeliveryReplayPayload(replayed=1, delivery=EventDelivery.from_row(delivery))
        if input.delivery_id is None and input.subscription_id is not None and input.since is not None:
            count = await service.replay_since(parse_id(input.subscription_id, field="subscriptionId"), input.since)
            return EventDeliveryReplayPayload(replayed=count, delivery=None)
        raise BadUserInput("give either deliveryId, or subscriptionId and since")
