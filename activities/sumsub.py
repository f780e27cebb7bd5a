"""Activities that open the customer's KYC case at Sumsub, through our signed Sumsub client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.customer import CUSTOMER_TYPES, CustomerType, KycLevel, VerificationFlow
from domain.errors import ErrorType
from domain.kyc import KycEvent
from integrations.sumsub.client import SumsubClient, SumsubError
from integrations.sumsub.webhooks import kind_of_review
from kit.settings import Settings

# Sumsub refuses a level change while a review is in one of these.
_REVIEW_UNDER_WAY = frozenset({"pending", "queued", "onHold"})


class CreateApplicantInput(BaseModel):
    customer_id: str
    customer_type: CustomerType
    email: str
    # Provided at registration (a person's names, a company's name); None when the portal sent none.
    first_name: str | None = None
    last_name: str | None = None
    company_name: str | None = None


class CreateKycLinkInput(BaseModel):
    customer_id: str
    customer_type: CustomerType
    level: KycLevel = KycLevel.BASIC  # the level being verified: onboarding's, or an upgrade's


class MoveToLevelInput(BaseModel):
    applicant_id: str
    customer_type: CustomerType
    level: KycLevel


class ApplicantRef(BaseModel):
    applicant_id: str


class ChangeApplicantEmailInput(BaseModel):
    applicant_id: str
    email: str


@contextmanager
def _permanent_errors_fail_fast() -> Iterator[None]:
    """Sumsub 4xx (bar 429) will not change on retry; say so, so the workflow can compensate."""
    try:
        yield
    except SumsubError as exc:
        if exc.retryable:
            raise
        raise ApplicationError(
            f"Sumsub refused the request ({exc.status_code}: {exc.description})",
            type=ErrorType.SUMSUB_REJECTED,
            non_retryable=True,
        ) from exc


class SumsubActivities:
    def __init__(self, client: SumsubClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    @activity.defn
    async def create_sumsub_applicant(self, request: CreateApplicantInput) -> str:
        """Creates the applicant (externalUserId = customer id) with the data provided at registration
        (`fixedInfo` for a person, `info.companyInfo` for a company); a 409 means it exists and is reused."""
        flow = CUSTOMER_TYPES[request.customer_type].flow
        names = {"firstName": request.first_name, "lastName": request.last_name}
        fixed_info = {key: value for key, value in names.items() if value is not None}
        company_info = {"companyName": request.company_name} if request.company_name is not None else None
        with _permanent_errors_fail_fast():
            applicant, _created = await self._client.create_applicant(
                external_user_id=request.customer_id,
                level_name=self._settings.sumsub_level_name(request.customer_type),
                applicant_type="individual" if flow is VerificationFlow.KYC else "company",
                email=request.email,
                fixed_info=fixed_info if flow is VerificationFlow.KYC else None,
                company_info=company_info if flow is VerificationFlow.KYB else None,
            )
        return applicant.id

    @activity.defn
    async def create_kyc_link(self, request: CreateKycLinkInput) -> str:
        """A WebSDK link the portal shows the customer to complete verification (at the requested level)."""
        with _permanent_errors_fail_fast():
            return await self._client.create_websdk_link(
                external_user_id=request.customer_id,
                level_name=self._settings.sumsub_level_name(request.customer_type, request.level),
                ttl_seconds=self._settings.sumsub_websdk_ttl_seconds,
            )

    @activity.defn
    async def move_sumsub_applicant_to_level(self, request: MoveToLevelInput) -> str:
        """Moves the applicant to the level's Sumsub level and answers its name (what its events carry); an
        applicant already there (an earlier upgrade ended) is reset, so its review starts again. Sumsub refuses
        while a review is pending, queued or on hold: a refusal is final for this request."""
        level_name = self._settings.sumsub_level_name(request.customer_type, request.level)
        with _permanent_errors_fail_fast():
            review = await self._client.get_review_status(request.applicant_id)
            if review.level_name != level_name:
                await self._client.move_to_level(request.applicant_id, level_name)
            elif review.review_status in _REVIEW_UNDER_WAY:
                raise SumsubError(f"the applicant's review at {level_name} is {review.review_status}", status_code=409)
            else:
                # Asked again at the level of an upgrade that ended: the old verdict must not decide the new one.
                await self._client.reset_applicant(request.applicant_id)
        return level_name

    @activity.defn
    async def change_sumsub_applicant_email(self, request: ChangeApplicantEmailInput) -> None:
        with _permanent_errors_fail_fast():
            await self._client.change_applicant_email(request.applicant_id, request.email)

    @activity.defn
    async def deactivate_sumsub_applicant(self, request: ApplicantRef) -> None:
        """Closes the applicant at Sumsub; deactivating twice, or one that is gone, is harmless."""
        with _permanent_errors_fail_fast():
            try:
                await self._client.deactivate_applicant(request.applicant_id)
            except SumsubError as exc:
                if exc.status_code != 404:
                    raise

    @activity.defn
    async def poll_kyc_review(self, request: ApplicantRef) -> KycEvent | None:
        """The safety net for lost webhooks: a completed review at Sumsub, as the webhook would have said it."""
        with _permanent_errors_fail_fast():
            review = await self._client.get_review_status(request.applicant_id)
        if review.review_status != "completed" or review.review_result is None:
            return None
        result = review.review_result
        return KycEvent(
            kind=kind_of_review(result.review_answer, result.review_reject_type),
            sumsub_type="applicantReviewed (polled)",
            applicant_id=request.applicant_id,
            occurred_at=datetime.now(UTC),
            dedupe_key=f"poll:{review.review_id}:{review.attempt_id}",
            moderation_comment=result.moderation_comment,
            reject_labels=result.reject_labels,
            level_name=review.level_name,
        )
