"""The GraphQL schema: what the portal, ops and customers can ask and do.

permissions.py  who may call what (the resolver context, role checks)
types.py        what the API answers with
inputs.py       what callers send, and its validation
queries.py      reads
mutations.py    changes, each one call of the customer service (`api/service.py`)
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache

from api.errors import ApiError
from api.schema.mutations import Mutation
from api.schema.permissions import Context
from api.schema.queries import Query

__all__ = ["Context", "schema"]


def _is_unexpected(error: GraphQLError) -> bool:
    """Our typed errors and GraphQL's own (validation, coercion, permissions) are meant for the caller."""
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError))


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    extensions=[
        lambda: MaskErrors(should_mask_error=_is_unexpected),
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
    ],
)
