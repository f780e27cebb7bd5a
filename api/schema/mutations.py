"""What the portal, ops and customers can do; each mutation is one call of the customer service."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from api.errors import BadUserInput
from api.schema.compliance import ComplianceMutation
from api.schema.documents import DocumentMutation
from api.schema.inputs import (
    CustomerCloseInput,
    CustomerEmailUpdateInput,
    CustomerKycLevelUpgradeInput,
    CustomerKycLinkCreateInput,
    CustomerOnboardingRetryInput,
    CustomerReactivateInput,
    CustomerRegisterInput,
    CustomerSuspendInput,
    WebhookReplayInput,
    valid_email,
    valid_provided_names,
    valid_telegram_handle,
)
from api.schema.permissions import (
    Context,
    OpsOnly,
    OpsOrCustomer,
    PortalOpsOrCustomer,
    PortalOrOps,
    actor,
    is_staff,
    own_customer,
)
from api.schema.subscriptions import SubscriptionMutation
from api.schema.types import Customer, CustomerKycLinkCreatePayload, CustomerPayload, StoredWebhookType
from api.service import parse_customer_id
from domain.customer import CustomerType
from domain.state import CustomerState


def _payload(state: CustomerState) -> CustomerPayload:
    return CustomerPayload(customer=Customer.from_state(state, live=True))


@strawberry.type
class Mutation(DocumentMutation, SubscriptionMutation, ComplianceMutation):
    @strawberry.mutation(
        permission_classes=[PortalOpsOrCustomer],
        description="A fresh Sumsub verification link; for the portal, ops, or the customer themself (a customer's "
        "token for any other customer is FORBIDDEN).",
    )
    async def customer_kyc_link_create(
        self, info: Info[Context, Any], input: CustomerKycLinkCreateInput
    ) -> CustomerKycLinkCreatePayload:
        customer_id = parse_customer_id(input.customer_id, field="customerId")
        if not is_staff(info):
            await own_customer(info, customer_id)
        return CustomerKycLinkCreatePayload(url=await info.context.services.customers.create_kyc_link(customer_id))

    @strawberry.mutation(
        permission_classes=[OpsOrCustomer],
        description="Moves an ACTIVE customer at BASIC to the ADVANCED KYC level's review at Sumsub (refused by Sumsub "
        "while a review is pending, queued or on hold: CONFLICT); the customer stays ACTIVE at BASIC until Sumsub "
        "approves. For ops, or the customer themself.",
    )
    async def customer_kyc_level_upgrade(
        self, info: Info[Context, Any], input: CustomerKycLevelUpgradeInput
    ) -> CustomerPayload:
        customer_id = parse_customer_id(input.customer_id, field="customerId")
        if not info.context.principal.has_role("ops"):
            await own_customer(info, customer_id)
        return _payload(await info.context.services.customers.upgrade_kyc_level(customer_id, actor=actor(info)))

    @strawberry.mutation(permission_classes=[PortalOrOps])
    async def customer_register(self, info: Info[Context, Any], input: CustomerRegisterInput) -> CustomerPayload:
        customer_type = CustomerType(input.customer_type)
        state = await info.context.services.customers.register(
            email=valid_email(input.email),
            customer_type=customer_type,
            telegram_handle=valid_telegram_handle(input.telegram_handle),
            provided=valid_provided_names(
                customer_type, first_name=input.first_name, last_name=input.last_name, company_name=input.company_name
            ),
        )
        return _payload(state)

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_suspend(self, info: Info[Context, Any], input: CustomerSuspendInput) -> CustomerPayload:
        customer_id = parse_customer_id(input.customer_id)
        return _payload(
            await info.context.services.customers.suspend(customer_id, reason=input.reason, actor=actor(info))
        )

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_reactivate(self, info: Info[Context, Any], input: CustomerReactivateInput) -> CustomerPayload:
        customer_id = parse_customer_id(input.customer_id)
        return _payload(await info.context.services.customers.reactivate(customer_id, actor=actor(info)))

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_close(self, info: Info[Context, Any], input: CustomerCloseInput) -> CustomerPayload:
        customer_id = parse_customer_id(input.customer_id)
        return _payload(
            await info.context.services.customers.close(customer_id, reason=input.reason, actor=actor(info))
        )

    @strawberry.mutation(permission_classes=[OpsOnly])
    async def customer_onboarding_retry(
        self, info: Info[Context, Any], input: CustomerOnboardingRetryInput
    ) -> CustomerPayload:
        customer_id = parse_customer_id(input.customer_id)
        return _payload(await info.context.services.customers.retry_onboarding(customer_id, actor=actor(info)))

    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="Changes the customer's email everywhere (PostgreSQL, Keycloak, Sumsub) or nowhere.",
    )
    async def customer_email_update(self, info: Info[Context, Any], input: CustomerEmailUpdateInput) -> CustomerPayload:
        email = valid_email(input.email)
        customer_id = parse_customer_id(input.customer_id)
        return _payload(await info.context.services.customers.change_email(customer_id, email=email, actor=actor(info)))

    @strawberry.mutation(
        permission_classes=[OpsOnly],
        description="Delivers a stored Sumsub webhook to its customer's workflow again.",
    )
    async def webhook_replay(self, info: Info[Context, Any], input: WebhookReplayInput) -> StoredWebhookType:
        try:
            inbox_id = int(input.id)
        except ValueError:
            raise BadUserInput("webhook id must be a number", field="id") from None
        return StoredWebhookType.from_entry(await info.context.services.inbox.replay(inbox_id))
