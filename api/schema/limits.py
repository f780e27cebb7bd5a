"""What one GraphQL request may cost, checked before anything runs.

Strawberry's own extensions bound the depth, the aliases and the tokens (the parser stops at the
limit, so a huge document costs no more than the limit to refuse); `cost_limit_rule` bounds the work:
every object a query may resolve counts once, and a list counts as many times as it may be long
(`first` on a connection, the known maximum of other lists), multiplied through the nesting. A body
over `max_bytes` is refused with 413 before it is read whole (`api/app.py`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from graphql.type import GraphQLOutputType
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, max_aliases, query_depth_limiter
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.extensions.query_depth_limiter import IgnoreContext

from api.schema.profile import MAX_BENEFICIARIES
from api.schema.subscriptions import ATTEMPTS_SHOWN
from api.service import MAX_PAGE_SIZE
from api.subscriptions import MAX_DELIVERIES_PAGE
from db.customers import EVENTS_LIMIT

# How long a list may be, where no `first` argument says it: the most its resolver returns.
LIST_SIZES: dict[str, int] = {
    "Customer.events": EVENTS_LIMIT,
    "CustomerConnection.edges": 1,  # sized by the connection's `first`
    "CompanyInfo.beneficiaries": MAX_BENEFICIARIES,
    "EventDelivery.attempts": ATTEMPTS_SHOWN,
}
DEFAULT_LIST_SIZE = 100
# `first` given as a variable is unknown while validating: count it as the most it may be.
MAX_FIRST: dict[str, int] = {
    "Query.customers": MAX_PAGE_SIZE,
    "Query.undeliverableWebhooks": 500,
    "Query.eventDeliveries": MAX_DELIVERIES_PAGE,
}


@dataclass(frozen=True)
class GraphQLLimits:
    """The defaults are far above anything the portal or ops tooling sends (their largest query, a page of
    100 customers with their audit trails, costs about 20,300)."""

    max_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2_000
    max_cost: int = 25_000
    max_bytes: int = 1024 * 1024


def extensions(limits: GraphQLLimits) -> list[Callable[[], SchemaExtension]]:
    """Factories: Strawberry makes each extension anew per request (they hold the request's context).

    The validation rules are made once, here: `ValidationCache` keys on the document and the rule classes,
    and `MaxAliasesLimiter` and `QueryDepthLimiter` make a new class per instance, so with them every
    request missed the cache (validation was a quarter of the API's CPU under a registration burst)."""
    rules: list[type[ASTValidationRule]] = [
        max_aliases.create_validator(limits.max_aliases),
        query_depth_limiter.create_validator(limits.max_depth, _is_introspection),
        cost_limit_rule(limits.max_cost),
    ]
    return [
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: AddValidationRules(rules),
    ]


# GraphQL's lexical units in one pass: a comment (skipped), a block or plain string, a number, a name, a
# punctuator. One pass, so a `#` inside a string is not taken for a comment. Commas and white space are
# not tokens.
_LEXEME = re.compile(
    r'(?P<comment>#[^\n\r]*)|"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n\r]|\\.)*"|-?\d[\w.+-]*|[_A-Za-z]\w*'
    r"|\.\.\.|[!$&()\[\]{}:=@|]",
    re.ASCII,
)


def token_count(document: str, limit: int) -> int:
    """About as many tokens as GraphQL's lexer would read, counted by a regular expression: the lexer
    takes ~4 us a token, so a document at the limit would cost ~8 ms to refuse; this costs well under
    one. It stops counting past `limit`; a document shorter than `limit` characters cannot hold more."""
    if len(document) <= limit:
        return 0
    tokens = (match for match in _LEXEME.finditer(document) if match.lastgroup != "comment")
    return sum(1 for _ in itertools.islice(tokens, limit + 1))  # stops past the limit


def _is_introspection(ignore: IgnoreContext) -> bool:
    return ignore.field_name.startswith("__")


def cost_limit_rule(max_cost: int) -> type[ValidationRule]:
    class CostLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
            schema = self.context.schema
            root = schema.mutation_type if node.operation is OperationType.MUTATION else schema.query_type
            if root is None:
                return
            cost = _cost(self.context, root, node.selection_set, max_cost)
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"the query may resolve {cost} objects, more than the {max_cost} allowed; "
                        "ask for smaller pages or fewer nested lists",
                        node,
                        extensions={"code": "BAD_USER_INPUT"},
                    )
                )

    return CostLimit


def _cost(context: ValidationContext, parent: GraphQLObjectType, selections: SelectionSetNode, ceiling: int) -> int:
    """Objects the selection may resolve under one `parent`; stops counting once past `ceiling`."""
    total = 0
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            field = parent.fields.get(selection.name.value)
            if field is None or selection.selection_set is None:
                continue  # a leaf, an introspection field or an unknown one (other rules report it)
            target = _object_type(field.type)
            if target is None:
                continue
            size = _size(parent, selection, field.type)
            total += size * (1 + _cost(context, target, selection.selection_set, ceiling))
        elif isinstance(selection, InlineFragmentNode):
            total += _cost(context, parent, selection.selection_set, ceiling)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = context.get_fragment(selection.name.value)
            if fragment is not None:
                total += _cost(context, parent, fragment.selection_set, ceiling)
        if total > ceiling:
            return total
    return total


def _size(parent: GraphQLObjectType, node: FieldNode, field_type: GraphQLOutputType) -> int:
    key = f"{parent.name}.{node.name.value}"
    for argument in node.arguments or ():
        if argument.name.value == "first":
            value = argument.value
            return (
                max(int(value.value), 0) if isinstance(value, IntValueNode) else MAX_FIRST.get(key, DEFAULT_LIST_SIZE)
            )
    if key in MAX_FIRST:  # `first` left at its default
        field = parent.fields[node.name.value]
        default = field.args["first"].default_value
        return int(default) if isinstance(default, int) else MAX_FIRST[key]
    return LIST_SIZES.get(key, DEFAULT_LIST_SIZE) if _is_list(field_type) else 1


def _is_list(field_type: GraphQLOutputType) -> bool:
    while isinstance(field_type, GraphQLNonNull):
        field_type = field_type.of_type
    return isinstance(field_type, GraphQLList)


def _object_type(field_type: Any) -> GraphQLObjectType | None:
    while isinstance(field_type, (GraphQLNonNull, GraphQLList)):
        field_type = field_type.of_type
    return field_type if isinstance(field_type, GraphQLObjectType) else None
