"""The nonces of the signed commands an agent obeyed, kept in its storage so that a
captured command cannot be played again after a restart.

A nonce is kept until its command would be refused as too old anyway (its `ts`
plus `[commands] max_age`, agent.link.commands.admit), so the store holds only
the commands signed within one window: a handful, a few bytes each, rewritten
(one small SQLite commit) only when a signed command arrives.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from agent.link.commands import CommandError

KEY = "command_nonces"  # the outbox meta key: {nonce: expiry, Unix seconds}
LIMIT = 1000  # signed commands within one max_age; more is refused, not forgotten


class MetaStore(Protocol):
    """The agent's outbox, as the nonces use its meta keys."""

    def get(self, key: str, default: object = None) -> object: ...

    def commit(self, records: list, now: dt.datetime, meta: dict | None = None) -> list: ...


class Nonces:
    def __init__(self, store: MetaStore) -> None:
        self._store = store
        self._seen: dict[str, float] = dict(store.get(KEY) or {})

    def remember(self, nonce: str, expires: dt.datetime, now: dt.datetime) -> None:
        """Record `nonce` durably until `expires`, or CommandError if it was seen before
        (or too many are kept). Raises StorageError when it cannot be written: then
        the command is not obeyed either."""
        seen = {n: at for n, at in self._seen.items() if at >= now.timestamp()}
        if nonce in seen:
            raise CommandError("replayed: this nonce was already used")
        if len(seen) >= LIMIT:
            raise CommandError(f"more than {LIMIT} signed commands within [commands] max_age: refused")
        seen[nonce] = expires.timestamp()
        self._store.commit([], now, {KEY: seen})
        self._seen = seen

    def __len__(self) -> int:
        return len(self._seen)
