"""Taking a member list into an agent, the same way whether it came from the
broker or from `fabpass members import`: the version must grow, the same
version again changes nothing, a bad list changes nothing; each outcome is
recorded in the outbox as an event.

A list's age is counted from its own `generated_at` (list_age), never from
when it arrived: a list delivered again, or replayed by whoever kept a copy,
stays as old as it is, and delivering it again writes nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.core.model import EventType
from agent.core.timespec import parse_rfc3339
from agent.daemon.outbox import Outbox
from agent.members.cache import MemberCache, VersionNotNewer
from agent.members.update import Updated

log = logging.getLogger("fabpass.members")

PAYLOAD_KEY = "members_payload"  # {"version", "sha256"} of the last list from the broker taken or confirmed
# {"sha256", "cached", "version", "error"} of the last list from the broker refused for what it holds
REFUSED_KEY = "members_refused"


@dataclass(frozen=True)
class ListOutcome:
    applied: bool
    version: int | None
    count: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "version": self.version, "count": self.count, "error": self.error}


class ListSync:
    """The member lists an agent takes into its cache, and what it records of them."""

    def __init__(self, outbox: Outbox, cache: MemberCache) -> None:
        self.outbox = outbox
        self.cache = cache

    def take(self, update: Callable[[], Updated], now: dt.datetime,
             remember: Callable[[int], dict[str, Any]] = lambda version: {},
             remember_refusal: Callable[[int | None, str], dict[str, Any]] = lambda version, error: {},
             ) -> ListOutcome:
        """Write a list into the cache with `update` (agent.members.update) and record
        the outcome: the version must grow, the same version again changes nothing, a
        bad list changes nothing. `remember(version)` gives meta keys to write with a
        list taken or found current, `remember_refusal(version, error)` with a list
        refused for what it holds (not for a full disk), in the same commit."""
        try:
            updated = update()
        except VersionNotNewer as err:
            if err.same:  # a retained list delivered again: it is still current
                remembered = remember(err.version)
                if remembered:
                    self.outbox.commit([], now, remembered)
                return ListOutcome(False, err.version)
            return self._refused(err.version, str(err), now, remember_refusal(err.version, str(err)))
        except ValueError as err:  # the list: the same bytes would be refused again
            version = getattr(err, "version", None)
            return self._refused(version, str(err), now, remember_refusal(version, str(err)))
        except (OSError, sqlite3.Error) as err:  # this machine: the next delivery tries again
            return self._refused(None, str(err), now)
        log.info("member list version %d applied: %d members", updated.version, updated.count)
        self.outbox.commit([(EventType.MEMBERS_UPDATED, {"version": updated.version, "count": updated.count})],
                           now, remember(updated.version))
        return ListOutcome(True, updated.version, updated.count)

    def take_published(self, payload: bytes, update: Callable[[bytes], Updated], now: dt.datetime,
                       settings: str = "") -> ListOutcome:
        """A list from the broker, written with `update` (in a child process) and recorded as `take` does.

        The broker delivers its retained list again at every reconnect. When the
        bytes are those last taken here, under the same `settings` (whatever else
        decides what the cache holds: the signing key, the badge hash key) and
        fabpass version, and the cache still holds that version, nothing is done:
        no child process (on a Pi Zero that is seconds of CPU and 20 MB at every
        reconnect), and no write. The bytes of a list last
        refused for what it holds, against the same cached version, are refused
        again without a child process and without another members_rejected event.
        """
        hashed = hashlib.sha256(f"{__version__}\0{settings}\0".encode())
        hashed.update(payload)  # hashlib lets go of the GIL for big data: taps go on
        digest = hashed.hexdigest()
        cached = self.cache.version
        last = self.outbox.get(PAYLOAD_KEY)
        if last is not None and last["sha256"] == digest and cached == last["version"]:
            return ListOutcome(False, last["version"])
        refused = self.outbox.get(REFUSED_KEY)
        if refused is not None and refused["sha256"] == digest and refused["cached"] == cached:
            return ListOutcome(False, refused["version"], error=refused["error"])
        return self.take(lambda: update(payload), now,
                         lambda version: {PAYLOAD_KEY: {"version": version, "sha256": digest}},
                         lambda version, error: {REFUSED_KEY: {"sha256": digest, "cached": cached,
                                                               "version": version, "error": error}})

    def _refused(self, version: int | None, error: str, now: dt.datetime,
                 meta: dict[str, Any] | None = None) -> ListOutcome:
        log.warning("member list rejected, the last good list stays in force: %s", error)
        fields: dict[str, Any] = {"error": error}
        if version is not None:
            fields["version"] = version
        self.outbox.commit([(EventType.MEMBERS_REJECTED, fields)], now, meta)
        return ListOutcome(False, version, error=error)


def list_age(generated_at: str | None, now: dt.datetime) -> float | None:
    """Seconds since the list was made (its `generated_at`); None when that is unknown.
    A list made in the future (a clock ahead on the admin's side) is of age 0."""
    if generated_at is None:
        return None
    try:
        made = parse_rfc3339(generated_at)
    except ValueError:
        return None
    return max(0.0, (now - made).total_seconds())


def is_stale(max_age: float | None, age: float | None) -> bool:
    return max_age is not None and (age is None or age > max_age)
