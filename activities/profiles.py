"""The activity that reads what Sumsub verified about a customer and stores it in PostgreSQL.

It returns only the names of the fields that changed (for the workflow's audit row): the verified
personal data goes from Sumsub to PostgreSQL directly and never enters the workflow's history.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import structlog
from pydantic import BaseModel, Field
from temporalio import activity

import db.profiles
from domain.customer import CUSTOMER_TYPES, CustomerType, VerificationFlow
from integrations.sumsub.client import SumsubClient
from integrations.sumsub.profile import verified_profile

log = structlog.get_logger("activities.profiles")


class StoreVerifiedProfileInput(BaseModel):
    customer_id: str
    customer_type: CustomerType
    applicant_id: str


class StoredProfileFields(BaseModel):
    """What changed, by name only (`personal_info.last_name`); empty when nothing did."""

    changed_fields: list[str] = Field(default_factory=list)


class ProfileActivities:
    def __init__(self, pool: asyncpg.Pool, sumsub: SumsubClient) -> None:
        self._pool = pool
        self._sumsub = sumsub

    @activity.defn
    async def store_verified_profile(self, request: StoreVerifiedProfileInput) -> StoredProfileFields:
        """Reads the applicant (`GET .../one`) and stores its verified data. Any Sumsub failure is retried
        (the workflow shows the step as current); storing the same data again changes nothing."""
        applicant = await self._sumsub.get_applicant_data(request.applicant_id)
        company = CUSTOMER_TYPES[request.customer_type].flow is VerificationFlow.KYB
        profile = verified_profile(applicant, company=company)
        async with self._pool.acquire() as conn:
            changed = await db.profiles.save_profile(
                conn,
                customer_id=request.customer_id,
                applicant_id=request.applicant_id,
                profile=profile,
                now=datetime.now(UTC),
            )
        log.info("verified profile stored", changed_fields=changed)
        return StoredProfileFields(changed_fields=changed)
