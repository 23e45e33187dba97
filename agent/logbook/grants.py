"""What machines granted by themselves (an enrolled badge, an induction a trainer gave)
and the lab's own member list does not hold yet: `fabpass members pending`.

A grant is a `badge_enrolled` or `induction_granted` event in the archive. It
is pending until `fabpass members sync --db` finds it in the lab's source,
which settles it here, or the lab dismisses it (`fabpass members dismiss`);
until then the sync merges it into what it publishes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from sqlite_utils import Database

from agent.core.model import EventType
from agent.core.timespec import rfc3339

KEYS = ("kind", "member_id", "value", "expires", "by", "machine", "ts", "event_id")
_KINDS = {EventType.BADGE_ENROLLED: ("badge", "badge"), EventType.INDUCTION_GRANTED: ("induction", "induction")}


def _grant(row: dict[str, Any]) -> dict[str, Any] | None:
    """A pending entry from an archived event; None for one without the fields docs/reference/mqtt.md gives it."""
    event = json.loads(row["payload"])
    kind, field = _KINDS[row["type"]]
    value, member_id = event.get(field), event.get("member_id")
    if not (isinstance(value, str) and value and isinstance(member_id, str) and member_id):
        return None
    expires = event.get("expires") if kind == "induction" else None
    return {"kind": kind, "member_id": member_id, "value": value,
            "expires": expires if isinstance(expires, str) else None,
            "by": event.get("by"), "machine": row["machine"], "ts": row["ts"], "event_id": row["event_id"]}


def pending(db: Database) -> list[dict[str, Any]]:
    """Grants not yet found in the lab's source, oldest first, with KEYS."""
    rows = db.query(
        "SELECT event_id, type, machine, ts, payload FROM events WHERE type IN (?, ?)"
        " AND event_id NOT IN (SELECT event_id FROM settled_grants)"
        " AND event_id NOT IN (SELECT event_id FROM dismissed_grants) ORDER BY ts, rowid",
        list(_KINDS))
    return [grant for row in rows if (grant := _grant(row)) is not None]


class UnknownGrant(ValueError):
    """An id that names no pending grant, or more than one."""


def dismiss(db: Database, ids: Iterable[str], by: str, now: dt.datetime) -> list[dict[str, Any]]:
    """Refuse pending grants, each named by its event id or a unique prefix of it (8
    characters at least): the sync merges them no more, and the next list it publishes
    retires them on their machines. All or none: UnknownGrant names the first id that
    is not one pending grant."""
    open_grants = pending(db)
    chosen: dict[str, dict[str, Any]] = {}
    for wanted in ids:
        key = wanted.strip().lower()
        if len(key) < 8:
            raise UnknownGrant(f"{wanted!r}: an id of 8 characters or more (see `fabpass members pending`)")
        matches = [g for g in open_grants if g["event_id"].lower().startswith(key)]
        if len(matches) != 1:
            raise UnknownGrant(f"{wanted!r}: " + ("not a pending grant's id (see `fabpass members pending`)"
                                                 if not matches else f"the start of {len(matches)} grants' ids"))
        chosen[matches[0]["event_id"]] = matches[0]
    with db.atomic():
        db["dismissed_grants"].insert_all(
            [{"event_id": event_id, "dismissed_at": rfc3339(now), "by": by} for event_id in chosen], ignore=True)
    return list(chosen.values())


def last_dismissal(db: Database) -> str | None:
    """When the lab last dismissed a grant (RFC 3339), or None."""
    return db.execute("SELECT max(dismissed_at) FROM dismissed_grants").fetchone()[0]


def settle(db: Database, event_ids: Iterable[str], now: dt.datetime) -> int:
    """Mark grants as found in the source; how many were newly settled."""
    rows = [{"event_id": event_id, "settled_at": rfc3339(now)} for event_id in event_ids]
    with db.atomic():
        before = db["settled_grants"].count
        db["settled_grants"].insert_all(rows, ignore=True)
        return db["settled_grants"].count - before
