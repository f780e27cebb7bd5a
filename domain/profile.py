"""The customer's verified profile: what Sumsub recognised about the person or the company.

Every field is optional because Sumsub returns only what it recognised; nothing here is ever filled
with a placeholder. What was *provided* at registration lives in `Registration` (`domain/state.py`).
The verified profile is stored in PostgreSQL by the activity that reads it (`db/profiles.py`), never in
the workflow's state, so verified personal data stays out of Temporal's history.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Profile(BaseModel):
    model_config = ConfigDict(frozen=True)


class Address(_Profile):
    country: str | None = None
    post_code: str | None = None
    town: str | None = None
    street: str | None = None
    formatted_address: str | None = None


class PersonalInfo(_Profile):
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    date_of_birth: date | None = None
    nationality: str | None = Field(default=None, description="Alpha-3 country code.")
    address: Address | None = None
    phone: str | None = None


class Beneficiary(_Profile):
    applicant_id: str | None = None
    positions: list[str] = Field(default_factory=list)
    share_size: float | None = None


class CompanyInfo(_Profile):
    company_name: str | None = None
    registration_number: str | None = None
    country: str | None = Field(default=None, description="Alpha-3 country code.")
    legal_address: str | None = None
    incorporated_on: date | None = None
    company_type: str | None = None
    beneficiaries: list[Beneficiary] = Field(default_factory=list)


class VerifiedProfile(_Profile):
    """One of the two parts, as the customer's type says (a person's or a company's)."""

    personal_info: PersonalInfo | None = None
    company_info: CompanyInfo | None = None


def changed_fields(old: VerifiedProfile | None, new: VerifiedProfile) -> list[str]:
    """The dotted names of the fields whose values differ (`personal_info.last_name`), sorted: what the
    audit trail records, never the values. A list (beneficiaries) counts as one field."""
    before = _flatten(old.model_dump(mode="json") if old is not None else {})
    after = _flatten(new.model_dump(mode="json"))
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= _flatten(value, f"{name}.")
        elif value is not None and value != []:
            flat[name] = value
    return flat
