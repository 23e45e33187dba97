"""Applying a member list to an agent's cache, the same way whether it came
from the broker or from `fabpass members import`: the version must grow, the
same version again only confirms the list, a bad list changes nothing; each
outcome is recorded as an event."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.badgehash import BadgeHasher
from agent.members import MemberCache, VersionNotNewer
from agent.outbox import Outbox

log = logging.getLogger("fabpass.members")

CONFIRMED_KEY = "members_confirmed_at"


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    version: int | None
    count: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "version": self.version, "count": self.count, "error": self.error}


def apply_list(cache: MemberCache, outbox: Outbox, load: Callable[[], Any], now: dt.datetime,
               hasher: BadgeHasher | None = None) -> ApplyResult:
    """Parse with `load` (raises ValueError naming the problem) and apply; record the outcome.

    With `hasher`, the cache keeps only the keyed hashes of the list's badges.
    """
    version = None
    confirmed = {CONFIRMED_KEY: now.timestamp()}
    try:
        snapshot = load()
        if hasher is not None:
            snapshot = hasher.snapshot(snapshot)
        version = snapshot.version
        count = cache.apply(snapshot)
    except VersionNotNewer as err:
        if err.same:  # a retained list delivered again: it is still current
            outbox.commit([], now, confirmed)
            return ApplyResult(False, version)
        return _rejected(outbox, version, str(err), now)
    except (ValueError, OSError, sqlite3.Error) as err:
        return _rejected(outbox, getattr(err, "version", None) or version, str(err), now)
    log.info("member list version %d applied: %d members", version, count)
    outbox.commit([("members_updated", {"version": version, "count": count})], now, confirmed)
    return ApplyResult(True, version, count)


def _rejected(outbox: Outbox, version: int | None, error: str, now: dt.datetime) -> ApplyResult:
    log.warning("member list rejected, the last good list stays in force: %s", error)
    fields: dict[str, Any] = {"error": error}
    if version is not None:
        fields["version"] = version
    outbox.commit([("members_rejected", fields)], now)
    return ApplyResult(False, version, error=error)


def list_age(outbox: Outbox, now: dt.datetime) -> float | None:
    """Seconds since the list was last received, confirmed by the broker, or imported."""
    confirmed = outbox.get(CONFIRMED_KEY)
    return None if confirmed is None else max(0.0, now.timestamp() - confirmed)


def is_stale(max_age: float | None, age: float | None) -> bool:
    return max_age is not None and (age is None or age > max_age)
