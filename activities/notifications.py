"""Telling the customer something (a KYC reminder) through a pluggable notifier."""

from __future__ import annotations

from typing import Protocol

import structlog
from pydantic import BaseModel
from temporalio import activity

log = structlog.get_logger("notifications")


class Notification(BaseModel):
    customer_id: str
    kind: str
    details: dict[str, str | int] = {}


class Notifier(Protocol):
    """Delivers a notification; an e-mail or webhook sender implements this later."""

    async def send(self, notification: Notification) -> None: ...


class LogNotifier:
    """The default: a structured log line (the customer event is written by the workflow)."""

    async def send(self, notification: Notification) -> None:
        log.info(
            "customer notification",
            customer_id=notification.customer_id,
            kind=notification.kind,
            **notification.details,
        )


class NotificationActivities:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    @activity.defn
    async def notify_customer(self, notification: Notification) -> None:
        await self._notifier.send(notification)
