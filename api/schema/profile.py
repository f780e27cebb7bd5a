"""The customer's profile over GraphQL: what was *provided* at registration and what Sumsub *verified*.

Provided data comes from the workflow's registration; the verified part is read from PostgreSQL
(`db/profiles.py`) through the service. Who may read it is `Customer.profile`'s permission.
"""

from __future__ import annotations

from datetime import date, datetime

import strawberry

from db.profiles import StoredProfile
from domain import profile as domain
from domain.state import Registration

# A company has at most this many beneficiaries shown (the query cost counts the list at this size).
MAX_BENEFICIARIES = 100


@strawberry.type(description="What the registration provided: not verified by anyone.")
class ProvidedProfile:
    first_name: str | None
    last_name: str | None
    company_name: str | None

    @classmethod
    def from_registration(cls, reg: Registration) -> ProvidedProfile:
        return cls(first_name=reg.first_name, last_name=reg.last_name, company_name=reg.company_name)


@strawberry.type
class Address:
    country: str | None
    post_code: str | None
    town: str | None
    street: str | None
    formatted_address: str | None


@strawberry.type(description="A person as Sumsub verified them; only what it recognised is set.")
class PersonalInfo:
    first_name: str | None
    middle_name: str | None
    last_name: str | None
    date_of_birth: date | None
    nationality: str | None = strawberry.field(description="Alpha-3 country code.")
    address: Address | None
    phone: str | None


@strawberry.type
class Beneficiary:
    applicant_id: str | None = strawberry.field(description="The beneficiary's own Sumsub applicant.")
    positions: list[str] = strawberry.field(description="Such as ubo, director, shareholder, representative.")
    share_size: float | None


@strawberry.type(description="A company as Sumsub verified it; only what it recognised is set.")
class CompanyInfo:
    company_name: str | None
    registration_number: str | None
    country: str | None = strawberry.field(description="Alpha-3 country code.")
    legal_address: str | None
    incorporated_on: date | None
    company_type: str | None
    beneficiaries: list[Beneficiary]


@strawberry.type(description="What Sumsub verified: `personalInfo` for a person, `companyInfo` for an organisation.")
class VerifiedProfile:
    personal_info: PersonalInfo | None
    company_info: CompanyInfo | None
    verified_at: datetime = strawberry.field(description="When it was first stored (after the GREEN review).")
    updated_at: datetime = strawberry.field(description="When Sumsub's data last changed it.")

    @classmethod
    def from_stored(cls, stored: StoredProfile) -> VerifiedProfile:
        person, company = stored.profile.personal_info, stored.profile.company_info
        return cls(
            personal_info=None if person is None else _personal_info(person),
            company_info=None if company is None else _company_info(company),
            verified_at=stored.verified_at,
            updated_at=stored.updated_at,
        )


@strawberry.type
class CustomerProfile:
    provided: ProvidedProfile
    verified: VerifiedProfile | None = strawberry.field(description="Null until KYC approved the customer.")


def _personal_info(person: domain.PersonalInfo) -> PersonalInfo:
    address = person.address
    return PersonalInfo(
        first_name=person.first_name,
        middle_name=person.middle_name,
        last_name=person.last_name,
        date_of_birth=person.date_of_birth,
        nationality=person.nationality,
        address=None
        if address is None
        else Address(
            country=address.country,
            post_code=address.post_code,
            town=address.town,
            street=address.street,
            formatted_address=address.formatted_address,
        ),
        phone=person.phone,
    )


def _company_info(company: domain.CompanyInfo) -> CompanyInfo:
    return CompanyInfo(
        company_name=company.company_name,
        registration_number=company.registration_number,
        country=company.country,
        legal_address=company.legal_address,
        incorporated_on=company.incorporated_on,
        company_type=company.company_type,
        beneficiaries=[
            Beneficiary(applicant_id=b.applicant_id, positions=list(b.positions), share_size=b.share_size)
            for b in company.beneficiaries[:MAX_BENEFICIARIES]
        ],
    )
