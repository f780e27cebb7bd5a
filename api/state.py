"""Resources the API creates in its lifespan and hands to routes and resolvers as typed state."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from temporalio.client import Client

from api.auth import TokenVerifier
from api.compliance import ComplianceService
from api.documents import DocumentService
from api.export import DataExport
from api.inbox import WebhookInbox
from api.service import CustomerService
from api.subscriptions import SubscriptionService
from db.data_keys import DataKeyStore
from integrations.sumsub.images import SumsubImages
from kit.codec import EncryptionCodec
from kit.settings import Settings


@dataclass(frozen=True)
class AppState:
    settings: Settings
    pool: asyncpg.Pool
    temporal: Client
    verifier: TokenVerifier
    customers: CustomerService
    inbox: WebhookInbox
    documents: DocumentService
    subscriptions: SubscriptionService
    sumsub_images: SumsubImages
    data_keys: DataKeyStore | None  # customers' own payload keys (None: encryption off)
    codec: EncryptionCodec | None  # the codec server's, with `data_keys`
    compliance: ComplianceService
    export: DataExport
