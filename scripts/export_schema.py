"""Writes the GraphQL schema as SDL to `api/schema.graphql`, the contract clients generate code from.

    .venv/bin/python scripts/export_schema.py          # regenerate after changing api/schema.py
    .venv/bin/python scripts/export_schema.py --check  # exit 1 when the file is out of date

`tests/test_schema.py` fails while the committed file differs from the code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "api" / "schema.graphql"


def render() -> str:
    """The SDL of `api.schema.schema`, exactly as the file holds it."""
    from api.schema import schema  # imported here so `--help` works without the app's dependencies

    return schema.as_str().rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the GraphQL schema to api/schema.graphql.")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    sdl = render()
    current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else None
    if args.check:
        if current != sdl:
            print(f"{SCHEMA_FILE} is out of date; run: .venv/bin/python scripts/export_schema.py", file=sys.stderr)
            return 1
        return 0
    if current != sdl:
        SCHEMA_FILE.write_text(sdl, encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
    else:
        print(f"{SCHEMA_FILE} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
