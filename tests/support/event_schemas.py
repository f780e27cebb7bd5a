"""The published events' JSON Schemas (`api/event_schemas/`), loaded once with their cross-references."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[2] / "api" / "event_schemas"


@cache
def _registry() -> tuple[Registry, dict[str, dict[str, Any]]]:
    by_type: dict[str, dict[str, Any]] = {}
    registry: Registry = Registry()
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
        by_type[path.name.removesuffix(".schema.json")] = schema
    return registry, by_type


def schema_types() -> set[str]:
    return set(_registry()[1]) - {"lifecycle-event"}


def validator(event_type: str) -> Draft202012Validator:
    registry, by_type = _registry()
    return Draft202012Validator(by_type[event_type], registry=registry, format_checker=FormatChecker())
