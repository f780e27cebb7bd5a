"""Answers a repeated `customer(id)` read again, byte for byte, while the customer's projection row is unchanged.

The portal polls one customer until its status moves; ops reopen the same case. Strawberry's execution of
the portal's read costs about 0.6 ms of CPU (measured in-process) against about 0.15 ms for the HTTP request
and the row itself, so the API keeps the answers Strawberry gave, keyed by the document, its variables, the
caller (its verified token's principal) and the row's version: PostgreSQL's `xmin` of the customer's row and
of its deposit account, which every write of either changes. A repeated read costs one query for the version
and no GraphQL execution. Nothing is invalidated and nothing can be stale: a changed row is another version.

Only what the row alone decides is kept:
- a document (seen once, answered by Strawberry within its limits) whose one operation is a query with one
  root field, `customer(id: ...)`, and whose every selected field is plain data of the projection: a field
  without a resolver or a permission of its own (so not `currentStep`, which asks the workflow, nor
  `profile`, `documents`, `events`, `kycDocuments`), without fragments, directives or arguments;
- an answer with status 200, no errors and a customer (a refusal or null is never kept), stored only if the
  row's version after Strawberry answered is the version before it.
Everything else (any other document, a body over 4 KB or of no declared length, Authorization or
Content-Type sent twice, a missing or invalid token, an outage) goes to Strawberry as before, so its answers
are the ones it would give. A customer's answers are kept for the latest version seen only, and for at most
`TTL_SECONDS`: a read that finds the row changed drops them, and every lookup drops what has expired (so an
erased customer's old answer is gone at the first read after its minute, whoever reads).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import strawberry
from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    get_named_type,
    parse,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import AuthenticationError, IssuerUnavailable, Principal, bearer_token
from api.state import AppState
from kit import metrics

TTL_SECONDS = 60.0
MAX_DOCUMENTS = 256  # distinct documents whose plan is remembered (clients send a few, over and over)
MAX_ANSWERS_PER_CUSTOMER = 16  # distinct (document, variables, caller) answers kept for one customer
# Only requests this small are considered (the portal's read is ~250 bytes): what is kept stays small.
MAX_BODY_BYTES = 4096
ROOT_FIELD = "customer"

# The version of a customer's projection: its row's and its deposit account's last writing transaction.
_VERSION = """
    SELECT c.xmin::text || '/' || coalesce(a.xmin::text, '-')
    FROM customers c LEFT JOIN deposit_accounts a ON a.customer_id = c.id
    WHERE c.id = $1
"""


@dataclass(frozen=True)
class Plan:
    """A cacheable document: where its customer id comes from (a variable's name, or a literal)."""

    id_variable: str | None
    id_literal: str | None

    def customer_id(self, variables: dict[str, Any]) -> str | None:
        """The id the read names, normalised as the resolver does; None when it is not a UUID (Strawberry
        answers that)."""
        raw = variables.get(self.id_variable) if self.id_variable is not None else self.id_literal
        if not isinstance(raw, str):
            return None
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            return None


def plain_fields(schema: GraphQLSchema) -> frozenset[tuple[str, str]]:
    """(type, field) pairs whose value is the object's own data: no resolver, no permission of their own."""
    plain = set()
    for type_ in schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, graphql_field in type_.fields.items():
            definition = (graphql_field.extensions or {}).get("strawberry-definition")
            if definition is not None and definition.base_resolver is None and not definition.extensions:
                plain.add((type_.name, name))
    return frozenset(plain)


def plan_for(document: str, schema: GraphQLSchema, plain: frozenset[tuple[str, str]]) -> Plan | None:
    """The document's plan if the projection row alone decides its answer, else None (see the module)."""
    try:
        parsed = parse(document, no_location=True)
    except GraphQLError:
        return None
    if len(parsed.definitions) != 1:
        return None  # several operations, or fragments
    operation = parsed.definitions[0]
    if not isinstance(operation, OperationDefinitionNode) or operation.operation is not OperationType.QUERY:
        return None
    if operation.directives or len(operation.selection_set.selections) != 1:
        return None
    root = operation.selection_set.selections[0]
    query_type = schema.query_type
    if not isinstance(root, FieldNode) or root.name.value != ROOT_FIELD or root.directives or query_type is None:
        return None
    arguments = root.arguments or ()
    if len(arguments) != 1 or arguments[0].name.value != "id" or root.selection_set is None:
        return None
    value = arguments[0].value
    if isinstance(value, VariableNode):
        plan = Plan(id_variable=value.name.value, id_literal=None)
    elif isinstance(value, StringValueNode):
        plan = Plan(id_variable=None, id_literal=value.value)
    else:
        return None
    customer_type = get_named_type(query_type.fields[ROOT_FIELD].type)
    if not isinstance(customer_type, GraphQLObjectType):
        return None
    return plan if _only_plain(root.selection_set, customer_type, plain) else None


def _only_plain(selections: SelectionSetNode, parent: GraphQLObjectType, plain: frozenset[tuple[str, str]]) -> bool:
    for selection in selections.selections:
        if not isinstance(selection, FieldNode) or selection.directives or selection.arguments:
            return False  # a fragment, a directive or an argument: Strawberry's business
        name = selection.name.value
        if name == "__typename":
            continue
        if (parent.name, name) not in plain:
            return False
        if selection.selection_set is not None:
            child = get_named_type(parent.fields[name].type)
            if not isinstance(child, GraphQLObjectType) or not _only_plain(selection.selection_set, child, plain):
                return False
    return True


# (document, operationName, variables, caller) -> (headers, body) of Strawberry's answer
_Key = tuple[str, str | None, bytes, Principal]
_Answer = tuple[list[tuple[bytes, bytes]], bytes]


@dataclass
class _Answers:
    """One customer's kept answers, all for one version of its row."""

    version: str
    expires: float
    by_request: dict[_Key, _Answer] = field(default_factory=dict)


class ReadCache:
    """ASGI middleware in front of Strawberry's view on `/graphql` (inside `BodyLimit`); `max_customers` 0
    turns it off."""

    def __init__(self, app: ASGIApp, schema: strawberry.Schema, *, max_customers: int) -> None:
        self._app = app
        self._schema: GraphQLSchema = schema._schema
        self._plain = plain_fields(self._schema)
        self._max_customers = max_customers
        self._plans: OrderedDict[str, Plan | None] = OrderedDict()
        self._customers: OrderedDict[str, _Answers] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cacheable = self._max_customers > 0 and scope["type"] == "http" and scope["method"] == "POST"
        request_headers = _single_headers(scope) if cacheable else None
        if request_headers is None or not _small_json(request_headers):
            await self._app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before its request was whole: nobody to answer
        replay = _replaying(body, receive)
        request = _graphql_request(body)
        if request is None:
            await self._app(scope, replay, send)
            return
        query, operation_name, variables = request
        if query not in self._plans:
            # Parsed here only once Strawberry has accepted it (within its token, depth and alias limits).
            status, _, answer = await _answer_and_capture(self._app, scope, replay, send)
            if status == 200 and _result(answer) is not None:
                self._remember_plan(query)
            return
        self._plans.move_to_end(query)
        plan = self._plans[query]
        services: AppState = scope["app"].state.services
        customer_id = None if plan is None else plan.customer_id(variables)
        principal = None if customer_id is None else await _principal(services, request_headers)
        version = None if customer_id is None or principal is None else await _version(services.pool, customer_id)
        if customer_id is None or principal is None or version is None:
            await self._app(scope, replay, send)  # Strawberry answers, refuses, or says what is unavailable
            return
        key = (query, operation_name, orjson.dumps(variables, option=orjson.OPT_SORT_KEYS), principal)
        hit = self._kept(customer_id, version, key)
        if hit is not None:
            metrics.READ_CACHE.labels(result="hit").inc()
            await _send_answer(send, *hit)
            return
        metrics.READ_CACHE.labels(result="miss").inc()
        status, answer_headers, answer = await _answer_and_capture(self._app, scope, replay, send)
        result = _result(answer) if status == 200 else None
        if result is None or not any(value is not None for value in result.values()):
            return  # a refusal, or no customer: never kept
        if await _version(services.pool, customer_id) == version:  # nothing was written meanwhile
            self._keep(customer_id, version, key, (answer_headers, answer))

    def _remember_plan(self, query: str) -> None:
        self._plans[query] = plan_for(query, self._schema, self._plain)
        if len(self._plans) > MAX_DOCUMENTS:
            self._plans.popitem(last=False)

    def _kept(self, customer_id: str, version: str, key: _Key) -> _Answer | None:
        """The answer kept for this request at this version; drops what has expired or been superseded."""
        self._drop_expired()
        kept = self._customers.get(customer_id)
        if kept is not None and kept.version != version:
            del self._customers[customer_id]  # the row changed: the old answers are of no use (nor kept)
            return None
        return None if kept is None else kept.by_request.get(key)

    def _keep(self, customer_id: str, version: str, key: _Key, answer: _Answer) -> None:
        kept = self._customers.get(customer_id)
        if kept is None or kept.version != version:
            self._customers.pop(customer_id, None)
            kept = _Answers(version=version, expires=time.monotonic() + TTL_SECONDS)
            self._customers[customer_id] = kept  # in the order kept: the oldest first, to expire and evict
        if len(kept.by_request) < MAX_ANSWERS_PER_CUSTOMER:
            kept.by_request[key] = answer
        while len(self._customers) > self._max_customers:
            self._customers.popitem(last=False)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        while self._customers:
            oldest = next(iter(self._customers.values()))
            if oldest.expires > now:
                return
            self._customers.popitem(last=False)


def _graphql_request(body: bytes) -> tuple[str, str | None, dict[str, Any]] | None:
    """(query, operationName, variables) of a single JSON GraphQL request; None for anything else."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict) or not isinstance(query := request.get("query"), str):
        return None
    variables = request.get("variables")
    variables = {} if variables is None else variables
    operation_name = request.get("operationName")
    if not isinstance(variables, dict) or not (operation_name is None or isinstance(operation_name, str)):
        return None
    if set(request) - {"query", "variables", "operationName"}:
        return None  # extensions (persisted queries and the like): Strawberry's business
    return query, operation_name, variables


async def _principal(services: AppState, headers: dict[bytes, bytes]) -> Principal | None:
    token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
    if token is None:
        return None
    try:
        return await services.verifier.verify(token)
    except (AuthenticationError, IssuerUnavailable):
        return None


async def _version(pool: asyncpg.Pool, customer_id: str) -> str | None:
    """The row's version; None when there is no row or it cannot be read now (Strawberry then answers, or
    says what is unavailable)."""
    try:
        version: str | None = await pool.fetchval(_VERSION, customer_id)
    except Exception:  # noqa: BLE001  (an outage or any other failure: the uncached path decides)
        return None
    return version


def _single_headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The request's headers; None when Authorization or Content-Type comes more than once (which one counts
    is Strawberry's to say, so such a request never reaches the cache)."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in headers and name in (b"authorization", b"content-type"):
            return None
        headers[name] = value
    return headers


def _small_json(headers: dict[bytes, bytes]) -> bool:
    """A JSON body of a declared length a read's document fits in (larger ones, or streamed: Strawberry's)."""
    declared = headers.get(b"content-length", b"")
    media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    return media_type == b"application/json" and declared.isdigit() and int(declared) <= MAX_BODY_BYTES


def _result(answer: bytes) -> dict[str, Any] | None:
    """The answer's `data` when it has no errors; None for anything else."""
    try:
        result = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(result, dict) or "errors" in result or not isinstance(data := result.get("data"), dict):
        return None
    return data


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body; None if the client disconnected first."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app behind: the body already read, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer_and_capture(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Runs the app, passing its answer on as it goes, and returns that answer's status, headers and body."""
    status = 0
    answer_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def capturing_send(message: Message) -> None:
        nonlocal status, answer_headers
        if message["type"] == "http.response.start":
            status, answer_headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
        await send(message)

    await app(scope, receive, capturing_send)
    return status, answer_headers, b"".join(chunks)


async def _send_answer(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
