"""The GraphQL schema without HTTP: the committed SDL matches the code, and bad documents never execute."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from api.schema import schema

REPO_ROOT = Path(__file__).resolve().parent.parent
REGENERATE = ".venv/bin/python scripts/export_schema.py"


def _exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_schema", REPO_ROOT / "scripts" / "export_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_schema_file_matches_the_code() -> None:
    exporter = _exporter()
    committed: Path = exporter.SCHEMA_FILE
    assert committed.exists(), f"{committed.relative_to(REPO_ROOT)} is missing; generate it with: {REGENERATE}"
    expected, actual = exporter.render(), committed.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            actual.splitlines(),
            expected.splitlines(),
            "api/schema.graphql (committed)",
            "api.schema (code)",
            lineterm="",
        )
        shown = "\n".join(list(diff)[:80])
        pytest.fail(f"api/schema.graphql is out of date; regenerate it with: {REGENERATE}\n{shown}", pytrace=False)


CUSTOMER_ID = "00000000-0000-8000-8000-000000000000"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param("{ customer(id: ", "Syntax Error", id="malformed"),
        pytest.param("query { customer(id: $id) { id } ", "Syntax Error", id="unclosed selection"),
        pytest.param(
            f'{{ customer(id: "{CUSTOMER_ID}") {{ id noSuchField }} }}',
            "Cannot query field 'noSuchField' on type 'Customer'",
            id="unknown field",
        ),
        pytest.param(
            "{ noSuchRootField }", "Cannot query field 'noSuchRootField' on type 'Query'", id="unknown root field"
        ),
        pytest.param(
            "{ customer { id } }", "Argument 'Query.customer(id:)' of type 'ID!' is required", id="no argument"
        ),
        pytest.param(f'{{ customer(id: "{CUSTOMER_ID}") }}', "must have a selection of subfields", id="no selection"),
        pytest.param(
            'mutation { customerRegister(input: {email: "a@example.com", customerType: PIRATE}) { customer { id } } }',
            "Value 'PIRATE' does not exist in 'CustomerType' enum",
            id="unknown enum value",
        ),
    ],
)
async def test_an_invalid_document_is_refused_before_anything_runs(document: str, expected: str) -> None:
    # No context: had any resolver run it would have failed, and its error would be masked.
    result = await schema.execute(document)
    assert result.data is None
    assert result.errors, result
    messages = [error.message for error in result.errors]
    assert any(expected in message for message in messages), messages
    assert all(error.path is None for error in result.errors)


REGISTER = "mutation Register($input: CustomerRegisterInput!) { customerRegister(input: $input) { customer { id } } }"


@pytest.mark.parametrize(
    ("document", "variables", "expected"),
    [
        pytest.param(
            "query Get($id: ID!) { customer(id: $id) { id } }",
            {},
            "Variable '$id' has invalid value",
            id="missing variable",
        ),
        pytest.param(
            REGISTER,
            {"input": {"email": "a@example.com", "customerType": "PIRATE"}},
            "Value 'PIRATE' does not exist in 'CustomerType' enum",
            id="unknown enum value in a variable",
        ),
    ],
)
async def test_invalid_variables_are_refused_with_the_reason_unmasked(
    document: str, variables: dict[str, object], expected: str
) -> None:
    result = await schema.execute(document, variable_values=variables)
    assert result.data is None
    assert result.errors, result
    messages = [error.message for error in result.errors]
    assert any(expected in message for message in messages), messages


async def test_a_repeated_document_is_validated_once() -> None:
    """The limits' rules are the same classes on every request, so the validation cache (keyed on document
    and rules) answers a document the API has seen; before, each request made new rule classes and missed."""
    from strawberry.extensions.validation_cache import _get_validate_cache

    from api.schema import build_schema

    fresh = build_schema()  # a schema of its own: its documents are in no cache yet
    cache = _get_validate_cache(256)
    document = "query Again { __typename }"
    before = cache.cache_info()
    for _ in range(3):
        result = await fresh.execute(document)
        assert result.errors is None and result.data == {"__typename": "Query"}
    after = cache.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)
