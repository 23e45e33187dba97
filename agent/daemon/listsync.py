"""Applying a member list to an agent's cache, the same way whether it came
from the broker or from `fabpass members import`: the version must grow, the
same version again only confirms the list, a bad list changes nothing; each
outcome is recorded as an event."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__
from agent.members.badgehash import BadgeHasher
from agent.members.cache import MemberCache, VersionNotNewer
from agent.daemon.outbox import Outbox

log = logging.getLogger("fabpass.members")

CONFIRMED_KEY = "members_confirmed_at"
PAYLOAD_KEY = "members_payload"  # {"version", "sha256"} of the last list from the broker applied or confirmed
# {"sha256", "cached", "version", "error"} of the last list from the broker refused for what it holds
REFUSED_KEY = "members_refused"


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    version: int | None
    count: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "version": self.version, "count": self.count, "error": self.error}


@dataclass(frozen=True)
class Applied:
    version: int
    count: int


class ListError(ValueError):
    """A list that was refused; `version` when it was readable."""

    def __init__(self, message: str, version: int | None) -> None:
        super().__init__(message)
        self.version = version


def apply_here(cache: MemberCache, load: Callable[[], Any], hasher: BadgeHasher | None = None) -> Applied:
    """Parse with `load` and write the cache in this process.

    Raises VersionNotNewer, or ValueError/OSError/sqlite3.Error for a list
    that cannot be applied (then the cache is untouched). With `hasher`, the
    cache keeps only the keyed hashes of the list's badges.
    """
    snapshot = load()
    if hasher is not None:
        snapshot = hasher.snapshot(snapshot)
    return Applied(snapshot.version, cache.apply(snapshot))


def apply_in_child(directory: Path, payload: bytes, public_key: str | None = None,
                   hash_key_file: str | None = None, timeout: float = 600.0) -> Applied:
    """The same, in a child process (`python -m agent.members.applier`): parsing 100,000
    members holds the GIL for seconds, and taps must not wait for it."""
    command = [sys.executable, "-m", "agent.members.applier", str(directory)]
    if public_key:
        command += ["--public-key", public_key]
    if hash_key_file:
        command += ["--hash-key-file", hash_key_file]
    try:
        child = subprocess.run(command, input=payload, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OSError(f"applying the member list took over {timeout:.0f} s") from None
    try:
        answer = json.loads(child.stdout)
    except ValueError:
        raise OSError(f"the list applier failed: {child.stderr.decode(errors='replace')[-500:]}") from None
    if "cached" in answer:
        raise VersionNotNewer(answer["version"], answer["cached"])
    if answer.get("storage"):
        raise OSError(answer["error"])
    if "error" in answer:
        raise ListError(answer["error"], answer.get("version"))
    return Applied(answer["version"], answer["count"])


def apply_list(outbox: Outbox, apply: Callable[[], Applied], now: dt.datetime,
               remember: Callable[[int], dict[str, Any]] = lambda version: {},
               remember_refusal: Callable[[int | None, str], dict[str, Any]] = lambda version, error: {},
               ) -> ApplyResult:
    """Apply a list with `apply` (apply_here or apply_in_child) and record the outcome:
    the version must grow, the same version again only confirms the list, a bad
    list changes nothing. `remember(version)` gives meta keys to write with an
    applied or confirmed list, `remember_refusal(version, error)` with a list
    refused for what it holds (not for a full disk), in the same commit."""
    confirmed = {CONFIRMED_KEY: now.timestamp()}
    try:
        applied = apply()
    except VersionNotNewer as err:
        if err.same:  # a retained list delivered again: it is still current
            outbox.commit([], now, {**confirmed, **remember(err.version)})
            return ApplyResult(False, err.version)
        return _rejected(outbox, err.version, str(err), now, remember_refusal(err.version, str(err)))
    except ValueError as err:  # the list: the same bytes would be refused again
        version = getattr(err, "version", None)
        return _rejected(outbox, version, str(err), now, remember_refusal(version, str(err)))
    except (OSError, sqlite3.Error) as err:  # this machine: the next delivery tries again
        return _rejected(outbox, None, str(err), now)
    log.info("member list version %d applied: %d members", applied.version, applied.count)
    outbox.commit([("members_updated", {"version": applied.version, "count": applied.count})], now,
                  {**confirmed, **remember(applied.version)})
    return ApplyResult(True, applied.version, applied.count)


def apply_published(outbox: Outbox, cache: MemberCache, payload: bytes, apply: Callable[[bytes], Applied],
                    now: dt.datetime, settings: str = "") -> ApplyResult:
    """A list from the broker, applied with `apply` (apply_in_child) and recorded as apply_list does.

    The broker delivers its retained list again at every reconnect. When the
    bytes are those last applied or confirmed here, under the same `settings`
    (whatever else decides what the cache holds: the signing key, the badge
    hash key) and fabpass version, and the cache still holds that version, the
    list is only confirmed: no applier process is started (on a Pi Zero that is
    seconds of CPU and 20 MB at every reconnect). The bytes of a list last
    refused for what it holds, against the same cached version, are refused
    again without an applier and without another members_rejected event.
    """
    hashed = hashlib.sha256(f"{__version__}\0{settings}\0".encode())
    hashed.update(payload)  # hashlib lets go of the GIL for big data: taps go on
    digest = hashed.hexdigest()
    cached = cache.version
    last = outbox.get(PAYLOAD_KEY)
    if last is not None and last["sha256"] == digest and cached == last["version"]:
        outbox.commit([], now, {CONFIRMED_KEY: now.timestamp()})
        return ApplyResult(False, last["version"])
    refused = outbox.get(REFUSED_KEY)
    if refused is not None and refused["sha256"] == digest and refused["cached"] == cached:
        return ApplyResult(False, refused["version"], error=refused["error"])
    return apply_list(outbox, lambda: apply(payload), now,
                      lambda version: {PAYLOAD_KEY: {"version": version, "sha256": digest}},
                      lambda version, error: {REFUSED_KEY: {"sha256": digest, "cached": cached,
                                                            "version": version, "error": error}})


def _rejected(outbox: Outbox, version: int | None, error: str, now: dt.datetime,
              meta: dict[str, Any] | None = None) -> ApplyResult:
    log.warning("member list rejected, the last good list stays in force: %s", error)
    fields: dict[str, Any] = {"error": error}
    if version is not None:
        fields["version"] = version
    outbox.commit([("members_rejected", fields)], now, meta)
    return ApplyResult(False, version, error=error)


def list_age(outbox: Outbox, now: dt.datetime) -> float | None:
    """Seconds since the list was last received, confirmed by the broker, or imported."""
    confirmed = outbox.get(CONFIRMED_KEY)
    return None if confirmed is None else max(0.0, now.timestamp() - confirmed)


def is_stale(max_age: float | None, age: float | None) -> bool:
    return max_age is not None and (age is None or age > max_age)
