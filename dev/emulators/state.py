"""Where an emulator keeps its state between runs: small JSON files under one folder (`--state-dir`).

Each object is its own file (`applicants/<id>.json`, `users/<id>.json`), written whole to a temporary
file and moved into place with `os.replace`, so a process killed at any moment leaves either the old or
the new version, never half of one; one small file per change keeps every write cheap however much the
emulator holds. Logs that only grow (sent e-mails, webhook attempts) are JSON lines, appended; a line
torn by a kill is skipped when read. Nothing is fsynced: this survives the process dying, which is what
a dev stack needs, not the machine losing power.

Without a state dir an emulator keeps everything in memory (`Store(None)` does nothing), as the tests
that start emulators in-process expect.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class Store:
    """JSON documents and JSON-lines logs under `root`; every method is a no-op when `root` is None."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._tails_checked: set[str] = set()
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, name: str) -> Path:
        assert self.root is not None
        return self.root / name

    def read(self, name: str) -> Any | None:
        """The document `name` (e.g. "signing-key.json"), or None if there is none (or it is unreadable)."""
        if self.root is None:
            return None
        path = self._path(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            logger.warning("ignoring unreadable emulator state file %s", path)
            return None

    def write(self, name: str, document: Any) -> None:
        """Replaces the document `name` atomically (temporary file, then os.replace)."""
        if self.root is None:
            return
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)

    def delete(self, name: str) -> None:
        if self.root is None:
            return
        self._path(name).unlink(missing_ok=True)

    def read_all(self, folder: str) -> dict[str, Any]:
        """Every document in `folder`, by file name without `.json`."""
        if self.root is None or not self._path(folder).is_dir():
            return {}
        documents = {}
        for path in sorted(self._path(folder).glob("*.json")):
            document = self.read(f"{folder}/{path.name}")
            if document is not None:
                documents[path.stem] = document
        return documents

    def append(self, name: str, record: Any) -> None:
        """Appends one JSON line to the log `name`."""
        if self.root is None:
            return
        line = json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n"
        with self._path(name).open("ab") as log:
            if name not in self._tails_checked:
                self._tails_checked.add(name)
                # A previous process killed mid-write left a torn last line: start a new one after it.
                if log.tell() > 0:
                    with self._path(name).open("rb") as existing:
                        existing.seek(-1, os.SEEK_END)
                        if existing.read(1) != b"\n":
                            line = "\n" + line
            log.write(line.encode())

    def read_lines(self, name: str) -> list[Any]:
        """Every record of the log `name`, oldest first; a torn (unparsable) line is skipped."""
        if self.root is None:
            return []
        try:
            lines = self._path(name).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                logger.warning("skipping a torn line in %s", self._path(name))
        return records


# The keys of the stored items the request being answered may have changed (see `touch`).
_TOUCHED: ContextVar[set[str] | None] = ContextVar("touched", default=None)


def touch(key: str) -> None:
    """Marks a stored item (a user id) as possibly changed by the request being answered, so the save that
    follows writes it. Per request, so a save of another request in between cannot lose the mark."""
    touched = _TOUCHED.get()
    if touched is not None:
        touched.add(key)


class SaveBeforeAnswering:
    """ASGI middleware: after a request that may have changed state (any method but GET, HEAD and
    OPTIONS), calls `save` with the keys the request `touch`ed before the response starts, so what a client
    was told is already on disk."""

    def __init__(self, app: ASGIApp, save: Callable[[set[str]], None]) -> None:
        self.app = app
        self.save = save

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        touched: set[str] = set()
        token = _TOUCHED.set(touched)

        async def saving_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.save(touched)
            await send(message)

        try:
            await self.app(scope, receive, saving_send)
        finally:
            _TOUCHED.reset(token)
