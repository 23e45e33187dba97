"""Badges as keyed hashes, so that a lost SD card or a leaked log hands out no cloneable UID.

With `[members] badge_hash_key_file`, the agent stores and publishes
HMAC-SHA256(site key, UID) instead of the UID: in its cache, its events and
its logs. A list may carry UIDs (hashed as it is applied) or hashes made by
`fabpass members publish --hash-key`, so UIDs need not cross the broker either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from agent.core.model import HASHED_BADGE_LENGTH, UID_PREFIX, Member

MIN_KEY_BYTES = 16


class BadgeKeyError(ValueError):
    pass


class BadgeHasher:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise BadgeKeyError(f"a badge hash key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: str | Path) -> BadgeHasher:
        path = Path(path)
        try:
            mode = os.stat(path).st_mode
            key = path.read_bytes().strip()
        except OSError as err:
            raise BadgeKeyError(f"{path}: cannot read: {err.strerror or err}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise BadgeKeyError(f"{path}: readable by others; chmod 600 {path}")
        try:
            return cls(key)
        except BadgeKeyError as err:
            raise BadgeKeyError(f"{path}: {err}") from None

    def __call__(self, badge: str) -> str:
        """The hash of a UID; a badge that is already a hash is returned as it is. A badge
        written `uid:` (secure cards) keeps its prefix."""
        if badge.startswith(UID_PREFIX):
            return UID_PREFIX + self(badge[len(UID_PREFIX):])
        if len(badge) == HASHED_BADGE_LENGTH:
            return badge
        return hmac.new(self._key, badge.encode("ascii"), hashlib.sha256).hexdigest().upper()

    def snapshot(self, snapshot):
        """`snapshot` with every member's badges hashed, read lazily like the original."""
        return _HashedSnapshot(snapshot, self)


@dataclasses.dataclass(frozen=True)
class _HashedSnapshot:
    inner: object
    hasher: BadgeHasher

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def members(self) -> Iterator[Member]:
        for member in self.inner.members():
            yield member._replace(badges=tuple(self.hasher(b) for b in member.badges))
