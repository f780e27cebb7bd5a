"""What the Keycloak emulator keeps under `--state-dir`, so a restart forgets nothing a client relies on:

- `users/<id>.json`: every user, with every field the emulator keeps on it (attributes, required
  actions, realm and client roles, the password hash, ...), written when it changed;
- `signing-key.json`: the realm's RSA key (private JWK), so tokens signed before a restart still
  verify, at the emulator's admin API and at the API, which caches the JWKS;
- `sent-emails.jsonl`: the execute-actions e-mails, appended.

Clients, roles and the user profile come from the realm export on every start; a stored user replaces
the export's user of the same id or username (the export's service accounts, say, once their role
mappings changed). Logins in progress and authorization codes live seconds and stay in memory.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

from dev.emulators.state import Store

USERS_DIR = "users"
SIGNING_KEY = "signing-key.json"
SENT_EMAILS = "sent-emails.jsonl"


class RealmStore:
    """Loads and saves the realm's users, signing key and sent e-mails; a no-op without a folder.

    `user_type` is the emulator's user dataclass: its fields (and their types, to give sets back
    their type) decide what is stored, so a field added to it is kept without a change here."""

    def __init__(self, root: Path | None, user_type: type) -> None:
        self._store = Store(root)
        self._user_type = user_type
        self._types = typing.get_type_hints(user_type)
        self._written: dict[str, str] = {}  # user id -> the JSON last written for it
        self._emails_written = 0

    def load_users(self, users: MutableMapping[str, Any]) -> None:
        """Puts the stored users into `users` (by id), replacing the export's of the same id or username,
        and stores the export's users not stored yet (a service account's generated id stays its id)."""
        for state in self._store.read_all(USERS_DIR).values():
            user = self._user(state)
            for other in [u for u in users.values() if u.id == user.id or u.username == user.username]:
                del users[other.id]
            users[user.id] = user
            self._written[user.id] = self._json(user)
        self.save(users, [])

    def load_sent_emails(self, sent_emails: list[dict[str, Any]]) -> None:
        sent_emails[:0] = self._store.read_lines(SENT_EMAILS)
        self._emails_written = len(sent_emails)

    def signing_key(self, generated: RSAKey) -> RSAKey:
        """The stored key; the first time, `generated`, which is stored."""
        stored = self._store.read(SIGNING_KEY)
        if stored is not None:
            return RSAKey.import_key(stored)
        self._store.write(SIGNING_KEY, generated.as_dict(private=True))
        return generated

    def save(
        self, users: MutableMapping[str, Any], sent_emails: Sequence[dict[str, Any]], *, touched: set[str] | None = None
    ) -> None:
        """Writes each user that changed since the last save, deletes the deleted, appends new e-mails.
        `touched`: the only users that may have changed; None compares every user."""
        candidates = list(users) if touched is None else [user_id for user_id in touched if user_id in users]
        for user_id in candidates:
            text = self._json(users[user_id])
            if self._written.get(user_id) != text:
                self._store.write(f"{USERS_DIR}/{user_id}.json", json.loads(text))
                self._written[user_id] = text
        for gone in self._written.keys() - users.keys():
            self._store.delete(f"{USERS_DIR}/{gone}.json")
            del self._written[gone]
        for email in sent_emails[self._emails_written :]:
            self._store.append(SENT_EMAILS, email)
        self._emails_written = len(sent_emails)

    def _json(self, user: Any) -> str:
        fields = {field.name: _plain(getattr(user, field.name)) for field in dataclasses.fields(user)}
        return json.dumps(fields, sort_keys=True)

    def _user(self, state: dict[str, Any]) -> Any:
        known = {field.name for field in dataclasses.fields(self._user_type)}
        # A field the emulator no longer has is dropped; one it gained since takes its default.
        return self._user_type(**{k: _typed(self._types[k], v) for k, v in state.items() if k in known})


def _plain(value: Any) -> Any:
    """JSON-ready: sets become sorted lists."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _typed(annotation: Any, value: Any) -> Any:
    """`value` as read from JSON, given back the set types its field declares (`dict[str, set[str]]`...)."""
    if value is None:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (set, frozenset):
        return origin(_typed(args[0], item) for item in value) if args else origin(value)
    if origin is dict and len(args) == 2:
        return {key: _typed(args[1], item) for key, item in value.items()}
    if origin is list and args:
        return [_typed(args[0], item) for item in value]
    if origin in (typing.Union, types.UnionType):
        concrete = [arg for arg in args if arg is not type(None)]
        return _typed(concrete[0], value) if len(concrete) == 1 else value
    return value
