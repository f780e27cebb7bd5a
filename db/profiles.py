"""The verified profile (`customer_profiles`, migration 0004): every SQL statement about it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from db.customers import Conn
from domain.profile import VerifiedProfile, changed_fields


@dataclass(frozen=True)
class StoredProfile:
    applicant_id: str
    profile: VerifiedProfile
    verified_at: datetime
    updated_at: datetime


async def save_profile(
    conn: Conn, *, customer_id: str, applicant_id: str, profile: VerifiedProfile, now: datetime
) -> list[str]:
    """Stores what Sumsub verified and returns the names of the fields that changed (none when the same
    profile is stored again, so a retried or repeated refresh is harmless). One transaction; the row is
    locked while compared, so two refreshes cannot both miss each other's change."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT profile FROM customer_profiles WHERE customer_id = $1 FOR UPDATE", customer_id
        )
        old = None if row is None else VerifiedProfile.model_validate(_document(row["profile"]))
        changed = changed_fields(old, profile)
        if row is None:
            await conn.execute(
                """
                INSERT INTO customer_profiles (customer_id, applicant_id, profile, verified_at, updated_at)
                VALUES ($1, $2, $3, $4, $4)
                """,
                customer_id,
                applicant_id,
                profile.model_dump(mode="json"),
                now,
            )
        elif changed:
            await conn.execute(
                "UPDATE customer_profiles SET applicant_id = $2, profile = $3, updated_at = $4 WHERE customer_id = $1",
                customer_id,
                applicant_id,
                profile.model_dump(mode="json"),
                now,
            )
    return changed


async def get_profile(conn: Conn | asyncpg.Pool, customer_id: str) -> StoredProfile | None:
    row = await conn.fetchrow(
        "SELECT applicant_id, profile, verified_at, updated_at FROM customer_profiles WHERE customer_id = $1",
        customer_id,
    )
    if row is None:
        return None
    return StoredProfile(
        applicant_id=row["applicant_id"],
        profile=VerifiedProfile.model_validate(_document(row["profile"])),
        verified_at=row["verified_at"],
        updated_at=row["updated_at"],
    )


def _document(value: object) -> object:
    """jsonb arrives decoded when the pool has the JSON codec, as text otherwise."""
    return json.loads(value) if isinstance(value, str) else value
