"""GraphQL has limits: depth, aliases, tokens, cost (list sizes multiplied through the nesting), body
size, and introspection only where GraphiQL is on. Each refusal is a precise error and runs nothing.

Timing (a bomb refused in milliseconds, `/healthz` answering while bombs arrive) is measured by
`make bench-api` (its "graphql bombs" line), not here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql.language import Lexer, Source, TokenKind

from api.schema import GraphQLLimits, build_schema
from api.schema.limits import cost_limit_rule, token_count
from dev.stack import DevStack
from tests.support.graphql import graphql

PAGE_WITH_EVENTS = "customers(first: 100) { edges { node { id events { type } } } }"


def bomb(aliases: int) -> str:
    """The query that took 41 s and a core before the limits: many aliases of a page with its audit trails."""
    return "{ " + " ".join(f"a{i}: {PAGE_WITH_EVENTS}" for i in range(aliases)) + " }"


def messages(body: dict[str, Any]) -> list[str]:
    return [error["message"] for error in body.get("errors") or []]


async def test_the_alias_bomb_is_refused_before_anything_runs(ops: httpx.AsyncClient) -> None:
    body = await graphql(ops, bomb(500), {})
    assert body.get("data") is None
    assert messages(body) == ["Syntax Error: Document contains more than 2000 tokens. Parsing aborted."]


async def test_too_many_aliases_too_deep_and_too_costly_are_refused(ops: httpx.AsyncClient) -> None:
    aliases = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(31)) + " }"
    assert messages(await graphql(ops, aliases, {})) == ["31 aliases found. Allowed: 30"]

    # No path of the schema is deeper than the default limit (10) today: the limit guards what is added
    # later, so it is shown on a schema built with a lower one.
    shallow = build_schema(GraphQLLimits(max_depth=2))
    result = await shallow.execute("{ customers { edges { node { id } } } }")
    assert result.errors is not None and "exceeds maximum operation depth of 2" in result.errors[0].message

    costly = await graphql(ops, f"{{ a: {PAGE_WITH_EVENTS} b: {PAGE_WITH_EVENTS} }}", {})
    assert costly.get("data") is None
    assert [e.get("extensions", {}).get("code") for e in costly["errors"]] == ["BAD_USER_INPUT"]
    assert "more than the 25000 allowed" in costly["errors"][0]["message"]
    one_page = await graphql(ops, f"{{ {PAGE_WITH_EVENTS} }}", {})
    assert "errors" not in one_page, one_page  # ops' largest real query stays within the limit


@pytest.mark.parametrize(
    ("document", "cost"),
    [
        ("{ me { id kyc { status } } }", 2),  # me + kyc
        ("{ customers(first: 10) { edges { node { id } } } }", 10 * (1 + 1 * (1 + 1))),
        ("{ customers { edges { node { events { type } } } } }", 20 * (1 + 1 * (1 + 1 * (1 + 200)))),
        ("query($n: Int!) { customers(first: $n) { edges { node { id } } } }", 100 * (1 + 1 * (1 + 1))),
        ("{ ...F } fragment F on Query { undeliverableWebhooks(first: 3) { id } }", 3),
    ],
)
async def test_the_cost_counts_list_sizes_through_the_nesting(document: str, cost: int) -> None:
    """A schema whose cost limit is the expected cost accepts the document; one below it refuses it."""
    for limit, accepted in ((cost, True), (cost - 1, False)):
        schema = build_schema(GraphQLLimits(max_cost=limit))
        result = await schema.execute(document, variable_values={"n": 5})
        refused = [e for e in result.errors or [] if "objects, more than the" in e.message]
        assert bool(refused) is not accepted, (document, limit, result.errors)
    assert cost_limit_rule(cost) is not cost_limit_rule(cost)  # a rule per limit, nothing shared


@pytest.fixture
async def api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        yield http


async def test_a_body_over_the_limit_is_413_declared_or_streamed(
    api: httpx.AsyncClient, ops: httpx.AsyncClient
) -> None:
    auth = {"Authorization": ops.headers["Authorization"], "Content-Type": "application/json"}
    huge = json.dumps({"query": "{ me { id } }", "padding": "x" * (1024 * 1024)}).encode()
    declared = await api.post("/graphql", content=huge, headers=auth)
    assert declared.status_code == 413, declared.text

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused as the stream passes the limit
        for start in range(0, len(huge), 64 * 1024):
            yield huge[start : start + 64 * 1024]

    streamed = await api.post("/graphql", content=chunks(), headers=auth)
    assert streamed.status_code == 413, streamed.text
    assert (await api.get("/healthz")).status_code == 200


async def test_introspection_only_where_graphiql_is_on(ops: httpx.AsyncClient) -> None:
    over_http = await graphql(ops, "{ __schema { queryType { name } } }", {})  # the test stack runs without GraphiQL
    assert over_http.get("data") is None and "introspection" in " ".join(messages(over_http)).lower()
    with_graphiql = await build_schema(introspection=True).execute("{ __schema { queryType { name } } }")
    assert with_graphiql.errors is None and with_graphiql.data == {"__schema": {"queryType": {"name": "Query"}}}
    without = await build_schema(introspection=False).execute("{ __schema { queryType { name } } }")
    assert without.errors is not None


@pytest.mark.parametrize(
    "document",
    [
        "{ me { id } }",
        '{ a(x: "he said \\"hi\\"", y: -1.5e3, z: [1, 2]) { ...F } } # a comment { { {\nfragment F on Q { b }',
        '{ a(s: """a block "quoted" string""") }',
        '{ a(s: """a block\n# not a comment""") }',  # a `#` inside a string is no comment
        '{ a(x: "#") ' + "a " * 2500 + "}",  # ... nor does it hide what follows from the count
        '{ a # a comment with an unterminated " quote\n b }',
        bomb(40),
    ],
)
def test_the_fast_token_count_agrees_with_graphqls_lexer(document: str) -> None:
    """The pre-count refuses a bomb in well under a millisecond; it must count what the lexer counts."""
    lexer, lexed = Lexer(Source(document)), 0
    while lexer.advance().kind is not TokenKind.EOF:
        lexed += 1
    assert token_count(document, 0) == min(lexed, 1)  # stops past the limit (0 here)
    assert token_count(document, lexed) == (0 if len(document) <= lexed else lexed)
    assert token_count(document, lexed - 1) == lexed
