"""Issue 9, parts 1 and 2: provided data at registration and the verified profile from Sumsub, end to
end through the real stack (API, worker, Temporal, PostgreSQL, the Sumsub emulator's WebSDK page and
signed API); and the pure parts (Sumsub's `info` read into the profile, the changed-field names) here too."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import date
from typing import Any

import asyncpg
import httpx

from dev.stack import DevStack
from domain.profile import Address, Beneficiary, CompanyInfo, PersonalInfo, VerifiedProfile, changed_fields
from integrations.sumsub.client import SumsubClient
from integrations.sumsub.profile import verified_profile
from tests.support.graphql import fill_in, graphql, press, wait_for_stage

PROFILE = """
  profile {
    provided { firstName lastName companyName }
    verified {
      verifiedAt updatedAt
      personalInfo {
        firstName middleName lastName dateOfBirth nationality phone
        address { country postCode town street formattedAddress }
      }
      companyInfo {
        companyName registrationNumber country legalAddress incorporatedOn companyType
        beneficiaries { applicantId positions shareSize }
      }
    }
  }
"""
REGISTER = f"""mutation R($input: CustomerRegisterInput!) {{
  customerRegister(input: $input) {{ customer {{ id {PROFILE} }} }}
}}"""
GET = f"query G($id: ID!) {{ customer(id: $id) {{ id status {PROFILE} }} }}"
EVENTS = "query E($id: ID!) { customer(id: $id) { events { type actor details } } }"

PERSON_FORM = {
    "firstName": "Ada",
    "middleName": "Augusta",
    "lastName": "Lovelace",
    "dob": "1815-12-10",
    "countryOfBirth": "GBR",
    "phone": "+442071234567",
    "address.street": "12 St James's Square",
    "address.town": "London",
    "address.postCode": "SW1Y 4LB",
    "address.country": "GBR",
}
COMPANY_FORM: dict[str, str | list[str]] = {
    "companyInfo.companyName": "Analytical Engines Ltd",
    "companyInfo.registrationNumber": "RC-1843",
    "companyInfo.country": "GBR",
    "companyInfo.legalAddress": "1 Babbage Row, London",
    "companyInfo.incorporatedOn": "1843-07-01",
    "companyInfo.type": "Private limited company",
    "beneficiary.applicantId": ["5cb56e8e0a975a35f333cb83", "5cb56e8e0a975a35f333cb84", ""],
    "beneficiary.positions": ["ubo, director", "shareholder", ""],
    "beneficiary.shareSize": ["60", "40", ""],
}


async def _register(http: httpx.AsyncClient, **input: Any) -> dict[str, Any]:
    body = await graphql(http, REGISTER, {"input": input})
    assert "errors" not in body, body
    return body["data"]["customerRegister"]["customer"]


async def _customer(http: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    body = await graphql(http, GET, {"id": customer_id})
    assert "errors" not in body, body
    return body["data"]["customer"]


async def _until(http: httpx.AsyncClient, customer_id: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not check(customer := await _customer(http, customer_id)):
        assert time.monotonic() < deadline, f"never happened; last seen {customer}"
        await asyncio.sleep(0.1)
    return customer


async def _events(ops: httpx.AsyncClient, customer_id: str) -> list[dict[str, Any]]:
    body = await graphql(ops, EVENTS, {"id": customer_id})
    assert "errors" not in body, body
    return body["data"]["customer"]["events"]


async def _approve_after_filling_in(portal: httpx.AsyncClient, customer_id: str, form: Any) -> dict[str, Any]:
    waiting = await wait_for_stage(portal, customer_id, "AWAITING_KYC")
    url = waiting["kyc"]["verificationUrl"]
    async with httpx.AsyncClient() as browser:
        page = await browser.get(url)
    assert page.status_code == 200 and "Save data" in page.text, page.text
    await fill_in(url, form)
    await press(url, "submit")
    await wait_for_stage(portal, customer_id, "KYC_IN_REVIEW")
    await press(url, "approve")
    await wait_for_stage(portal, customer_id, "ONBOARDED")
    return waiting


async def test_an_individual_fills_in_the_page_and_the_verified_profile_follows_an_edit_after_activation(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient, sumsub: SumsubClient, database: asyncpg.Pool
) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@profile.example"
    registered = await _register(portal, email=email, customerType="INDIVIDUAL", firstName=" Ada ", lastName="Byron")
    provided = {"firstName": "Ada", "lastName": "Byron", "companyName": None}
    assert registered["profile"] == {"provided": provided, "verified": None}
    customer_id = registered["id"]
    waiting = await _approve_after_filling_in(portal, customer_id, PERSON_FORM)
    # The provided names went to Sumsub as fixedInfo when the applicant was created.
    applicant = await sumsub.get_applicant_data(waiting["kyc"]["applicantId"])
    assert applicant["fixedInfo"] == {"firstName": "Ada", "lastName": "Byron"}
    assert applicant["info"]["firstName"] == "Ada" and applicant["info"]["dob"] == "1815-12-10"

    customer = await _customer(portal, customer_id)
    assert customer["status"] == "ACTIVE"
    assert customer["profile"]["provided"] == provided  # provided and verified stay apart
    verified = customer["profile"]["verified"]
    assert verified["companyInfo"] is None
    assert verified["personalInfo"] == {
        "firstName": "Ada",
        "middleName": "Augusta",
        "lastName": "Lovelace",
        "dateOfBirth": "1815-12-10",
        "nationality": "GBR",  # no `country`: the country of birth
        "phone": "+442071234567",
        "address": {
            "country": "GBR",
            "postCode": "SW1Y 4LB",
            "town": "London",
            "street": "12 St James's Square",
            "formattedAddress": None,
        },
    }
    events = await _events(ops, customer_id)
    [stored] = [e for e in events if e["type"] == "profile.verified"]
    assert "personal_info.last_name" in stored["details"]["changed_fields"]
    assert "Lovelace" not in str(stored) and "1815" not in str(stored)  # names of fields, never values
    activated = next(i for i, e in enumerate(events) if e["type"] == "customer.activated")
    assert activated < events.index(stored)  # newest first: stored before the account opened

    # After activation the applicant edits their data on the page: applicantPersonalInfoChanged.
    async with httpx.AsyncClient() as browser:
        assert "Edit data" in (await browser.get(waiting["kyc"]["verificationUrl"])).text
    await fill_in(waiting["kyc"]["verificationUrl"], PERSON_FORM | {"lastName": "King", "country": "FRA"})
    changed = await _until(
        portal, customer_id, lambda c: c["profile"]["verified"]["personalInfo"]["lastName"] == "King"
    )
    assert changed["profile"]["verified"]["personalInfo"]["nationality"] == "FRA"  # `country` wins
    assert changed["profile"]["verified"]["verifiedAt"] == verified["verifiedAt"]
    assert changed["profile"]["verified"]["updatedAt"] > verified["updatedAt"]
    assert changed["status"] == "ACTIVE"

    async def refreshed() -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while not (rows := [e for e in await _events(ops, customer_id) if e["type"] == "kyc.personal_info_changed"]):
            assert time.monotonic() < deadline, "no audit row for the personal-info change"
            await asyncio.sleep(0.1)
        return rows[0]

    row = await refreshed()
    assert row["actor"] == "sumsub"
    assert row["details"]["changed_fields"] == ["personal_info.last_name", "personal_info.nationality"]

    # Both are published as customer.profile_updated (field names, never values), the first before the activation.
    published = await database.fetch(
        "SELECT type, data::text FROM lifecycle_events WHERE customer_id = $1 ORDER BY sequence", customer_id
    )
    types = [p["type"] for p in published]
    assert types.count("customer.profile_updated") == 2
    assert types.index("customer.profile_updated") < types.index("customer.activated")
    last = json.loads([p["data"] for p in published if p["type"] == "customer.profile_updated"][-1])
    assert last["changedFields"] == ["personal_info.last_name", "personal_info.nationality"]
    assert not any(value in p["data"] for p in published for value in ("King", "Lovelace", "1815", "Ada"))


async def test_a_company_with_two_beneficiaries_and_a_change_through_sumsubs_api(
    stack: DevStack, portal: httpx.AsyncClient, ops: httpx.AsyncClient, sumsub: SumsubClient
) -> None:
    email = f"engines-{uuid.uuid4().hex[:8]}@profile.example"
    registered = await _register(portal, email=email, customerType="PRIVATE_COMPANY", companyName="Analytical Engines")
    customer_id = registered["id"]
    assert registered["profile"]["provided"] == {
        "firstName": None,
        "lastName": None,
        "companyName": "Analytical Engines",
    }
    waiting = await _approve_after_filling_in(portal, customer_id, COMPANY_FORM)
    applicant_id = waiting["kyc"]["applicantId"]
    applicant = await sumsub.get_applicant_data(applicant_id)
    assert applicant["type"] == "company" and "fixedInfo" not in applicant

    verified = (await _customer(portal, customer_id))["profile"]["verified"]
    assert verified["personalInfo"] is None
    assert verified["companyInfo"] == {
        "companyName": "Analytical Engines Ltd",
        "registrationNumber": "RC-1843",
        "country": "GBR",
        "legalAddress": "1 Babbage Row, London",
        "incorporatedOn": "1843-07-01",
        "companyType": "Private limited company",
        "beneficiaries": [
            {"applicantId": "5cb56e8e0a975a35f333cb83", "positions": ["ubo", "director"], "shareSize": 60.0},
            {"applicantId": "5cb56e8e0a975a35f333cb84", "positions": ["shareholder"], "shareSize": 40.0},
        ],
    }

    # A script changes the extracted data through Sumsub's own signed API: the profile follows.
    company_info = applicant["info"]["companyInfo"] | {"legalAddress": "2 Difference Lane, London"}
    await sumsub.change_applicant_info(applicant_id, {"companyInfo": company_info})
    changed = await _until(
        ops,
        customer_id,
        lambda c: c["profile"]["verified"]["companyInfo"]["legalAddress"] == "2 Difference Lane, London",
    )
    assert len(changed["profile"]["verified"]["companyInfo"]["beneficiaries"]) == 2
    deadline = time.monotonic() + 15
    while not (rows := [e for e in await _events(ops, customer_id) if e["type"] == "kyc.personal_info_changed"]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert rows[0]["details"]["changed_fields"] == ["company_info.legal_address"]


async def test_names_of_the_other_kind_are_bad_input_and_nothing_is_stored(
    portal: httpx.AsyncClient, database: asyncpg.Pool
) -> None:
    cases = [
        ({"customerType": "INDIVIDUAL", "companyName": "Acme"}, "companyName"),
        ({"customerType": "BANK", "firstName": "Ada"}, "firstName"),
        ({"customerType": "INDIVIDUAL", "lastName": "x" * 201}, "lastName"),
    ]
    for input, field in cases:
        email = f"bad-{uuid.uuid4().hex[:8]}@profile.example"
        body = await graphql(portal, REGISTER, {"input": {"email": email, **input}})
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["field"] == field, body
        assert await database.fetchval("SELECT count(*) FROM customers WHERE email = $1", email) == 0


# --- the pure parts ----------------------------------------------------------------------------------


def test_sumsubs_info_becomes_the_profile_with_only_what_it_recognised() -> None:
    person = verified_profile(
        {
            "phone": "+15550100",
            "info": {
                "firstName": "Grace",
                "lastName": "Hopper",
                "dob": "not a date",
                "idDocs": [{"idDocType": "ID_CARD", "country": "CAN"}, {"idDocType": "PASSPORT", "country": "USA"}],
                "addresses": [{"town": "Arlington"}, {"town": "Elsewhere"}],
            },
        },
        company=False,
    )
    assert person == VerifiedProfile(
        personal_info=PersonalInfo(
            first_name="Grace",
            last_name="Hopper",
            nationality="USA",  # no country, no countryOfBirth: the PASSPORT's
            address=Address(town="Arlington"),  # the first address
            phone="+15550100",
        )
    )
    # Nothing recognised: nothing set, never a placeholder.
    assert verified_profile({}, company=False) == VerifiedProfile(personal_info=PersonalInfo())
    assert verified_profile({"info": {"companyInfo": {"beneficiaries": "x"}}}, company=True) == VerifiedProfile(
        company_info=CompanyInfo()
    )
    nationality = verified_profile({"info": {"country": "DEU", "countryOfBirth": "AUT"}}, company=False)
    assert nationality.personal_info is not None and nationality.personal_info.nationality == "DEU"


def test_changed_fields_are_dotted_names_without_values() -> None:
    old = VerifiedProfile(
        company_info=CompanyInfo(company_name="A", incorporated_on=date(2000, 1, 1), beneficiaries=[Beneficiary()])
    )
    new = VerifiedProfile(company_info=CompanyInfo(company_name="B", beneficiaries=[Beneficiary(share_size=5)]))
    assert changed_fields(old, new) == [
        "company_info.beneficiaries",
        "company_info.company_name",
        "company_info.incorporated_on",
    ]
    assert changed_fields(new, new) == []
    assert changed_fields(None, VerifiedProfile(personal_info=PersonalInfo())) == []


async def test_the_emulator_keeps_provided_and_verified_data_signed_and_announces_a_change_after_a_review() -> None:
    from tests.test_sumsub_emulator import LEVEL, WEBHOOK_KEYS, emulator

    async with emulator() as sumsub:
        applicant, _ = await sumsub.client.create_applicant(
            external_user_id=f"profile-{uuid.uuid4().hex[:8]}",
            level_name=LEVEL,
            applicant_type="company",
            company_info={"companyName": "Acme"},
        )
        assert (await sumsub.client.get_applicant_data(applicant.id))["info"] == {
            "companyInfo": {"companyName": "Acme"}
        }
        unsigned = await sumsub.http.patch(f"{sumsub.url}/resources/applicants/{applicant.id}/info", json={})
        assert unsigned.status_code == 401 and unsigned.json()["errorCode"] == 4003
        beneficiary = {"applicantId": "b" * 24, "positions": ["ubo"], "shareSize": 100}
        info = {"companyInfo": {"companyName": "Acme Ltd", "country": "GBR", "beneficiaries": [beneficiary]}}
        assert await sumsub.client.change_applicant_info(applicant.id, info) == info  # before a review: no webhook
        assert await sumsub.client.change_applicant_fixed_info(applicant.id, {"phone": "+1555"}) == {"phone": "+1555"}
        await sumsub.client.simulate_review(applicant.id, review_answer="GREEN")
        moved = {"companyInfo": info["companyInfo"] | {"legalAddress": "1 New Street"}}
        await sumsub.client.change_applicant_info(applicant.id, moved)
        deadline = time.monotonic() + 10
        while not sumsub.receiver.payloads("applicantPersonalInfoChanged"):
            assert time.monotonic() < deadline, sumsub.receiver.payloads()
            await asyncio.sleep(0.05)
        types = [p["type"] for p in sumsub.receiver.payloads()]
        assert types.count("applicantPersonalInfoChanged") == 1  # the change before the review sent none
        assert types.index("applicantReviewed") < types.index("applicantPersonalInfoChanged")
        [changed] = sumsub.receiver.payloads("applicantPersonalInfoChanged")
        assert set(changed) <= WEBHOOK_KEYS  # no personal data in a webhook
        data = await sumsub.client.get_applicant_data(applicant.id)
        assert data["info"] == moved and data["fixedInfo"] == {"phone": "+1555"}
