"""From Sumsub's applicant (`GET /resources/applicants/{id}/one`) to our verified profile.

The one place that reads Sumsub's `info` object: a person's `firstName`, `middleName`, `lastName`,
`dob`, `country`/`countryOfBirth`/a PASSPORT's country, `addresses[0]` and `phone`; a company's
`companyInfo` with its beneficiaries. Whatever is absent or of the wrong type stays absent.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from domain.profile import Address, Beneficiary, CompanyInfo, PersonalInfo, VerifiedProfile


def verified_profile(applicant: dict[str, Any], *, company: bool) -> VerifiedProfile:
    info = _object(applicant.get("info"))
    if company:
        return VerifiedProfile(company_info=_company_info(_object(info.get("companyInfo"))))
    return VerifiedProfile(personal_info=_personal_info(info, applicant))


def _personal_info(info: dict[str, Any], applicant: dict[str, Any]) -> PersonalInfo:
    addresses = info.get("addresses")
    first_address = _object(addresses[0]) if isinstance(addresses, list) and addresses else {}
    return PersonalInfo(
        first_name=_text(info.get("firstName")),
        middle_name=_text(info.get("middleName")),
        last_name=_text(info.get("lastName")),
        date_of_birth=_date(info.get("dob")),
        nationality=_text(info.get("country")) or _text(info.get("countryOfBirth")) or _passport_country(info),
        address=_address(first_address),
        phone=_text(info.get("phone")) or _text(applicant.get("phone")),
    )


def _passport_country(info: dict[str, Any]) -> str | None:
    docs = info.get("idDocs")
    for doc in docs if isinstance(docs, list) else []:
        doc = _object(doc)
        if doc.get("idDocType") == "PASSPORT" and _text(doc.get("country")):
            return _text(doc.get("country"))
    return None


def _address(raw: dict[str, Any]) -> Address | None:
    address = Address(
        country=_text(raw.get("country")),
        post_code=_text(raw.get("postCode")),
        town=_text(raw.get("town")),
        street=_text(raw.get("street")),
        formatted_address=_text(raw.get("formattedAddress")),
    )
    return None if address == Address() else address


def _company_info(raw: dict[str, Any]) -> CompanyInfo:
    beneficiaries = raw.get("beneficiaries")
    return CompanyInfo(
        company_name=_text(raw.get("companyName")),
        registration_number=_text(raw.get("registrationNumber")),
        country=_text(raw.get("country")),
        legal_address=_text(raw.get("legalAddress")),
        incorporated_on=_date(raw.get("incorporatedOn")),
        company_type=_text(raw.get("type")),
        beneficiaries=[_beneficiary(_object(b)) for b in beneficiaries if isinstance(b, dict)]
        if isinstance(beneficiaries, list)
        else [],
    )


def _beneficiary(raw: dict[str, Any]) -> Beneficiary:
    positions = raw.get("positions")
    share = raw.get("shareSize")
    return Beneficiary(
        applicant_id=_text(raw.get("applicantId")),
        positions=[p for p in positions if isinstance(p, str) and p] if isinstance(positions, list) else [],
        share_size=float(share) if isinstance(share, int | float) and not isinstance(share, bool) else None,
    )


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _date(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None
