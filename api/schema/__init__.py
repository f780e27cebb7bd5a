"""The GraphQL schema: what the portal, ops and customers can ask and do.

permissions.py  who may call what (the resolver context, role checks)
types.py        what the API answers with
inputs.py       what callers send, and its validation
queries.py      reads
mutations.py    changes, each one call of the customer service (`api/service.py`)
limits.py       what one request may cost (depth, aliases, tokens, list sizes)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
import structlog
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, MaskErrors, ParserCache, ValidationCache
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.types import ExecutionContext, ExecutionResult

from api.errors import ApiError, Unavailable
from api.schema.limits import GraphQLLimits, extensions, token_count
from api.schema.mutations import Mutation
from api.schema.permissions import Context
from api.schema.queries import Query
from db.pool import DATABASE_OUTAGES
from kit.temporal import is_unreachable

__all__ = ["Context", "GraphQLLimits", "build_schema", "schema"]

log = structlog.get_logger("api.graphql")


def is_outage(exc: BaseException | None) -> bool:
    """A dependency (PostgreSQL, Temporal) is down: the caller gets SERVICE_UNAVAILABLE and may retry."""
    return exc is not None and (isinstance(exc, DATABASE_OUTAGES) or is_unreachable(exc))


def _is_unexpected(error: GraphQLError) -> bool:
    """Our typed errors and GraphQL's own (validation, coercion, permissions) are meant for the caller."""
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError))


class _MaskErrors(MaskErrors):
    """Masks the unexpected; an outage of a dependency is said as such (SERVICE_UNAVAILABLE), not masked."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if is_outage(error.original_error):
            unavailable = Unavailable("a service the API depends on is unavailable; retry shortly")
            return GraphQLError(
                str(unavailable),
                error.nodes,
                error.source,
                error.positions,
                error.path,
                extensions=unavailable.extensions,
            )
        return super().anonymise_error(error)


class _Schema(strawberry.Schema):
    def __init__(self, *args: Any, limits: GraphQLLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    async def execute(self, query: str | None, *args: Any, **kwargs: Any) -> ExecutionResult:
        """Refuses a document with too many tokens before GraphQL's (slow, pure-Python) lexer reads it."""
        if query is not None and (tokens := token_count(query, self.limits.max_tokens)) > self.limits.max_tokens:
            log.info("graphql request refused", code=None, path=None, tokens=tokens)
            message = f"Syntax Error: Document contains more than {self.limits.max_tokens} tokens. Parsing aborted."
            return ExecutionResult(data=None, errors=[GraphQLError(message)])
        return await super().execute(query, *args, **kwargs)

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Refusals the caller is meant to see are routine (info, no traceback); only the unexpected is
        an error. Neither logs the document or its variables: they may hold personal data."""
        for error in errors:
            original = error.original_error
            fields: dict[str, Any] = {"path": ".".join(map(str, error.path or ())) or None}
            if not _is_unexpected(error):
                log.info("graphql request refused", code=(error.extensions or {}).get("code"), **fields)
            elif is_outage(original):
                log.warning("graphql dependency unavailable", error_type=type(original).__name__, **fields)
            else:
                log.error("graphql resolver failed", exc_info=original, **fields)


def build_schema(limits: GraphQLLimits | None = None, *, introspection: bool = True) -> strawberry.Schema:
    """The schema with its limits; introspection off in production (API_GRAPHIQL=false)."""
    limits = limits or GraphQLLimits()
    chosen: list[Callable[[], SchemaExtension]] = [*extensions(limits)]
    if not introspection:
        chosen.append(DisableIntrospection)
    return _Schema(
        limits=limits,
        query=Query,
        mutation=Mutation,
        extensions=[
            *chosen,
            lambda: _MaskErrors(should_mask_error=_is_unexpected),
            # Clients send the same few documents over and over: parse and validate each once (validation
            # was over a third of the API's CPU per `customer(id)` read before these caches).
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
        ],
    )


# The schema with the default limits: the SDL export, and tests that execute it directly.
schema = build_schema()
