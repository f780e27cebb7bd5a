"""Where a registration would leave its traces: the id the API derives from an email, and its workflow."""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.service import customer_id_for_email
from dev.stack import DevStack
from domain.customer import normalise_email, workflow_id_for
from kit.settings import Settings


def customer_id_of(stack: DevStack, email: str) -> str:
    """The id the stack's API gives the first customer registering `email` (keyed with its id secret)."""
    secret = stack.child_env.get("CUSTOMER_ID_SECRET", Settings.model_fields["customer_id_secret"].default)
    return customer_id_for_email(normalise_email(email), secret)


async def assert_no_workflow(temporal: Client, customer_id: str) -> None:
    """Temporal has no workflow for this customer, running or closed (describe is not eventually consistent)."""
    with pytest.raises(RPCError) as described:
        await temporal.get_workflow_handle(workflow_id_for(customer_id)).describe()
    assert described.value.status == RPCStatusCode.NOT_FOUND, described.value
