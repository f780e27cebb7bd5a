"""Resources the API creates in its lifespan and hands to routes and resolvers as typed state."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from temporalio.client import Client

from api.auth import TokenVerifier
from api.customers import CustomerService
from api.relay import WebhookRelay
from lifecycle.config import Settings


@dataclass(frozen=True)
class AppState:
    settings: Settings
    pool: asyncpg.Pool
    temporal: Client
    verifier: TokenVerifier
    customers: CustomerService
    relay: WebhookRelay
