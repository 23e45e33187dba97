"""One sync: fetch the lab's members, merge what machines granted, compare with the
retained list, and publish a new version when something changed or the retained
list is more than a day old.

Nothing is published, and exit 2 follows, when the source gives nothing usable
(an error page, an empty or truncated file, a member that does not validate)
or when the new list would drop more than `max_shrink` percent of the members:
a half-exported spreadsheet must not lock half the lab out.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.timespec import parse_rfc3339, rfc3339
from agent.labsync.diff import Diff, diff
from agent.labsync.merge import Merged, merge
from agent.labsync.sources import Listing, Source
from agent.link.broker import Broker, BrokerUnreachable
from agent.link.topics import Topics
from agent.members.snapshot import (
    Snapshot,
    SnapshotError,
    from_objects,
    load_json,
    to_json,
)
from agent.members.version import VersionError, next_version

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

REFRESH_AFTER = dt.timedelta(days=1)  # a list this old is published again, changed or not
DEFAULT_MAX_SHRINK = 10.0


class SyncRefused(ValueError):
    """Bad input: nothing was published (exit 2)."""


class SyncFailed(RuntimeError):
    """The broker or the logbook could not be reached (exit 1)."""


@dataclass
class Target:
    broker: Broker
    prefix: str = "fabpass"
    sign_key: Ed25519PrivateKey | None = None


@dataclass
class Plan:
    """What a sync found and decided."""

    snapshot: Snapshot
    diff: Diff
    retained_version: int | None
    retained_at: str | None
    why: str | None  # why it is published, or None when it is not
    merged: Merged | None = None
    warnings: list[str] = field(default_factory=list)
    published: bool = False

    def lines(self) -> list[str]:
        out = [f"warning: {w}" for w in self.warnings]
        out += self.merged.lines() if self.merged else []
        before = f"version {self.retained_version}" if self.retained_version else "no list"
        out += [f"against the retained list ({before}): " + line for line in self.diff.lines()]
        return out


def _retained(payload: bytes | None, warnings: list[str]) -> Snapshot | None:
    if payload is None:
        return None
    try:
        return load_json(payload)
    except SnapshotError as err:
        warnings.append(f"the retained list cannot be read ({err}); it will be replaced")
        return None


def plan(listing: Listing, retained_payload: bytes | None, grants: list[dict[str, Any]] | None,
         asked: set[str] | None, now: dt.datetime, max_shrink: float = DEFAULT_MAX_SHRINK,
         dismissed_at: str | None = None) -> Plan:
    """Decide, without I/O. `dismissed_at`: when the lab last dismissed a machine-made
    grant (a list generated after it retires it on its machine). Raises SyncRefused for
    a list that must not be published."""
    warnings = list(listing.warnings)
    merged = merge(listing.rows, grants) if grants is not None else None
    retained = _retained(retained_payload, warnings)
    try:
        version = next_version(retained.version if retained else None, now)
    except VersionError as err:
        raise SyncRefused(str(err)) from None
    try:
        snapshot = from_objects(merged.rows if merged else listing.rows, version, rfc3339(now))
    except SnapshotError as err:
        raise SyncRefused(str(err)) from None
    before = list(retained.members()) if retained else []
    changes = diff(before, snapshot.members(), asked)
    if changes.shrink_percent(len(before)) > max_shrink:
        raise SyncRefused(
            f"the new list drops {len(changes.removed)} of {len(before)} members "
            f"({changes.shrink_percent(len(before)):.0f}%, more than --max-shrink {max_shrink:g}%): "
            f"nothing published; first dropped: {', '.join(changes.removed[:5])}")
    why = None
    if retained is None:
        why = "no list on the broker yet"
    elif not changes.empty:
        why = "the members changed"
    elif dismissed_at is not None and (retained.generated_at is None or parse_rfc3339(dismissed_at)
                                       > parse_rfc3339(retained.generated_at)):
        why = "a machine-made grant was dismissed since the retained list was generated"
    elif retained.generated_at is None or now - parse_rfc3339(retained.generated_at) > REFRESH_AFTER:
        why = f"the retained list is more than a day old (generated {retained.generated_at or 'at an unknown time'})"
    return Plan(snapshot, changes, retained.version if retained else None,
                retained.generated_at if retained else None, why, merged, warnings)


def _asked_inductions(target: Target) -> set[str] | None:
    """The inductions the machines ask for, from their retained status; None when none says."""
    from agent.link.fleetview import fleet_status

    asked = {status["induction"] for status in fleet_status(target.broker, target.prefix)
             if isinstance(status.get("induction"), str)}
    return asked or None


def sync_once(source: Source, target: Target, db_path: Path | None = None, dry_run: bool = False,
              max_shrink: float = DEFAULT_MAX_SHRINK, now: dt.datetime | None = None) -> Plan:
    """Fetch, plan, and (unless `dry_run` or nothing to do) publish and settle grants.

    Raises SyncRefused (bad input: nothing published), SourceError (the same,
    from the source) or SyncFailed (broker or logbook unreachable)."""
    import sqlite3

    from agent.link.publish import PublishError, publish_acknowledged
    from agent.link.retained import read_retained
    from agent.logbook.grants import last_dismissal, pending, settle

    now = now or dt.datetime.now(dt.timezone.utc)
    listing = source.fetch()
    db = _open_logbook(db_path) if db_path else None
    try:
        grants = pending(db) if db is not None else None
        dismissed_at = last_dismissal(db) if db is not None else None
        topic = Topics(target.prefix).members
        try:
            retained = read_retained(target.broker, topic, timeout=15.0)
            asked = _asked_inductions(target)
        except BrokerUnreachable as err:
            raise SyncFailed(str(err)) from None
        result = plan(listing, retained, grants, asked, now, max_shrink, dismissed_at)
        if dry_run:
            return result
        if result.why:
            try:
                publish_acknowledged(target.broker, topic, to_json(result.snapshot, target.sign_key), retain=True)
            except PublishError as err:
                raise SyncFailed(str(err)) from None
            result.published = True
            log.info("published member list version %s (%s members): %s", result.snapshot.version,
                     result.snapshot.count, result.why)
        if db is not None and result.merged and result.merged.held:
            settle(db, result.merged.held, now)
        return result
    except sqlite3.Error as err:
        raise SyncFailed(f"--db: {db_path}: {err}") from None
    finally:
        if db is not None:
            db.close()


def _open_logbook(path: Path):
    import sqlite3

    from agent.logbook.store import LogbookMissing, open_db

    try:
        return open_db(path)
    except LogbookMissing as err:
        raise SyncRefused(f"--db: {err}") from None
    except sqlite3.Error as err:
        raise SyncFailed(f"--db: {path}: {err}") from None

