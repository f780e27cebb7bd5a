"""What the portal, ops and customers can ask."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from api.schema.compliance import ComplianceQuery
from api.schema.documents import DocumentQuery
from api.schema.inputs import CustomerFilter, CustomerSort, SortDirection, valid_email
from api.schema.permissions import (
    Authenticated,
    Context,
    OpsOnly,
    PortalOpsOrCustomer,
    find_own_customer,
    is_staff,
    own_customer,
)
from api.schema.subscriptions import SubscriptionQuery
from api.schema.types import Customer, CustomerConnection, CustomerEdge, PageInfo, StoredWebhookType
from api.service import cursor_for, decode_cursor, parse_customer_id


@strawberry.type
class Query(DocumentQuery, SubscriptionQuery, ComplianceQuery):
    @strawberry.field(
        permission_classes=[PortalOpsOrCustomer],
        description="One customer as its last recorded change left it (the PostgreSQL projection); null when "
        "there is none. "
        "Portal and ops may name any id; a customer's own token only its own (any other id is FORBIDDEN, "
        "whether it exists or not).",
    )
    async def customer(self, info: Info[Context, Any], id: strawberry.ID) -> Customer | None:
        customer_id = parse_customer_id(id)
        if not is_staff(info):
            return Customer.from_state(await own_customer(info, customer_id))
        state = await info.context.services.customers.get(customer_id)
        return None if state is None else Customer.from_state(state)

    @strawberry.field(
        permission_classes=[OpsOnly],
        description="Customers from the PostgreSQL projection, newest first unless sorted otherwise; "
        "`first` is 1-100, `after` an `endCursor` from the previous page (ops only).",
    )
    async def customers(
        self,
        info: Info[Context, Any],
        first: int = 20,
        after: str | None = None,
        filter: CustomerFilter | None = None,
        sort: CustomerSort | None = None,
    ) -> CustomerConnection:
        descending = (sort or CustomerSort()).direction is SortDirection.DESC
        page = await info.context.services.customers.page(
            (filter or CustomerFilter()).to_db(),
            first=first,
            after=None if after is None else decode_cursor(after),
            descending=descending,
        )
        edges = [CustomerEdge(cursor=cursor_for(state), node=Customer.from_state(state)) for state in page.customers]
        end_cursor = edges[-1].cursor if edges else None
        return CustomerConnection(
            edges=edges, page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=end_cursor)
        )

    @strawberry.field(
        permission_classes=[OpsOnly], description="The customer with this email, in any letter case (ops only)."
    )
    async def customer_by_email(self, info: Info[Context, Any], email: str) -> Customer | None:
        state = await info.context.services.customers.get_by_email(valid_email(email))
        return None if state is None else Customer.from_state(state)

    @strawberry.field(
        permission_classes=[Authenticated],
        description="The customer a customer's own token belongs to (realm role `customer`, its customer_id "
        "claim, and the Keycloak user provisioned for that customer); null for any other token.",
    )
    async def me(self, info: Info[Context, Any]) -> Customer | None:
        state = await find_own_customer(info)
        return None if state is None else Customer.from_state(state)

    @strawberry.field(
        permission_classes=[OpsOnly],
        description="Stored Sumsub webhooks no workflow took, that were refused, or whose delivery keeps failing.",
    )
    async def undeliverable_webhooks(self, info: Info[Context, Any], first: int = 50) -> list[StoredWebhookType]:
        entries = await info.context.services.inbox.undeliverable(first)
        return [StoredWebhookType.from_entry(entry) for entry in entries]
