"""What callers send: the GraphQL input types and the checks that turn bad input into BAD_USER_INPUT."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import Enum

import strawberry
from email_validator import EmailNotValidError, validate_email

import db.customers
from api.errors import BadUserInput
from api.schema.types import CustomerStatus, CustomerType, KycStatus, OnboardingStage
from api.service import ProvidedData

MAX_NAME_LENGTH = 200
_TELEGRAM_HANDLE = re.compile(r"^@?([A-Za-z][A-Za-z0-9_]{4,31})$")


@strawberry.enum
class CustomerSortField(Enum):
    CREATED_AT = "CREATED_AT"


@strawberry.enum
class SortDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.input
class CustomerSort:
    field: CustomerSortField = CustomerSortField.CREATED_AT
    direction: SortDirection = SortDirection.DESC


@strawberry.input(description="Every field set narrows the list; the creation range is [createdAfter, createdBefore).")
class CustomerFilter:
    status: CustomerStatus | None = None
    customer_type: CustomerType | None = None
    kyc_status: KycStatus | None = None
    stage: OnboardingStage | None = None
    created_after: datetime | None = strawberry.field(default=None, description="Created at or after this instant.")
    created_before: datetime | None = strawberry.field(default=None, description="Created before this instant.")

    def to_db(self) -> db.customers.CustomerFilter:
        return db.customers.CustomerFilter(
            status=self.status,
            customer_type=self.customer_type,
            kyc_status=self.kyc_status,
            stage=self.stage,
            created_after=aware(self.created_after),
            created_before=aware(self.created_before),
        )


@strawberry.input
class CustomerKycLinkCreateInput:
    customer_id: strawberry.ID


@strawberry.input
class CustomerKycLevelUpgradeInput:
    customer_id: strawberry.ID


@strawberry.input
class CustomerRegisterInput:
    email: str
    customer_type: CustomerType
    telegram_handle: str | None = None
    first_name: str | None = strawberry.field(default=None, description="Provided (not verified); individuals only.")
    last_name: str | None = strawberry.field(default=None, description="Provided (not verified); individuals only.")
    company_name: str | None = strawberry.field(
        default=None, description="Provided (not verified); organisations only."
    )


@strawberry.input
class CustomerSuspendInput:
    customer_id: strawberry.ID
    reason: str


@strawberry.input
class CustomerReactivateInput:
    customer_id: strawberry.ID


@strawberry.input
class CustomerCloseInput:
    customer_id: strawberry.ID
    reason: str


@strawberry.input
class CustomerOnboardingRetryInput:
    customer_id: strawberry.ID


@strawberry.input
class CustomerEmailUpdateInput:
    customer_id: strawberry.ID
    email: str


@strawberry.input
class WebhookReplayInput:
    id: strawberry.ID


def valid_email(value: str) -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise BadUserInput(f"invalid email: {exc}", field="email") from None


def aware(value: datetime | None) -> datetime | None:
    """An instant without an offset is read as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def valid_provided_names(
    customer_type: CustomerType, *, first_name: str | None, last_name: str | None, company_name: str | None
) -> ProvidedData:
    """A person's names or an organisation's name, trimmed (blank is absent), at most 200 characters each;
    a name of the other kind is BAD_USER_INPUT rather than silently dropped."""
    values = {"firstName": first_name, "lastName": last_name, "companyName": company_name}
    clean: dict[str, str | None] = {}
    for field, value in values.items():
        text = " ".join(value.split()) if value is not None else ""
        if len(text) > MAX_NAME_LENGTH:
            raise BadUserInput(f"{field} must be at most {MAX_NAME_LENGTH} characters", field=field)
        clean[field] = text or None
    individual = CustomerType(customer_type) is CustomerType.INDIVIDUAL
    for field in ("companyName",) if individual else ("firstName", "lastName"):
        if clean[field] is not None:
            kind = "organisations" if individual else "individuals"
            raise BadUserInput(f"{field} is for {kind} only", field=field)
    return ProvidedData(first_name=clean["firstName"], last_name=clean["lastName"], company_name=clean["companyName"])


def valid_telegram_handle(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    match = _TELEGRAM_HANDLE.match(value.strip())
    if match is None:
        raise BadUserInput("telegram handle must be 5-32 letters, digits or underscores", field="telegramHandle")
    return match.group(1).lower()
