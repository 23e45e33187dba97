"""GDPR duties: keep personal data only as long as needed, and show members their own.

A session is as old as its end (an open session is never old); an event as
its `ts`, except that the start event of a session still kept stays with it.
Pseudonymising replaces `member_id` and `badge` with a keyed hash (HMAC-SHA256
under a key kept apart from the database), so counts and hours per
(pseudonymous) member still add up while nobody holding only the database
can tell who it was.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

from sqlite_utils import Database

from agent.core.model import EventType
from agent.core.timespec import rfc3339
from agent.logbook.queries import SESSION_KEYS, sessions

PSEUDONYM_PREFIX = "anon-"

_OLD_EVENTS = """ts < :cutoff AND NOT (type = 'session_started' AND EXISTS (
    SELECT 1 FROM sessions s WHERE s.machine = events.machine AND s.incarnation = events.incarnation
    AND s.start_seq = events.seq
    AND (s."end" IS NULL OR s."end" >= :cutoff)))"""
_OLD_SESSIONS = '"end" IS NOT NULL AND "end" < :cutoff'


def months_before(now: dt.datetime, months: int) -> dt.datetime:
    """The same day and time `months` calendar months earlier (clamped to the month's end)."""
    year, month0 = divmod(now.year * 12 + now.month - 1 - months, 12)
    day = min(now.day, calendar.monthrange(year, month0 + 1)[1])
    return now.replace(year=year, month=month0 + 1, day=day)


def pseudonym(key: bytes, value: str | None) -> str | None:
    if value is None or value.startswith(PSEUDONYM_PREFIX):
        return value
    return PSEUDONYM_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:20]


def delete_older(db: Database, cutoff: dt.datetime) -> dict[str, int]:
    """Delete events and sessions older than `cutoff`; the counts deleted."""
    params = {"cutoff": rfc3339(cutoff)}
    with db.atomic():
        deleted = {"events": db.execute(f"DELETE FROM events WHERE {_OLD_EVENTS}", params).rowcount}
        deleted["sessions"] = db.execute(f"DELETE FROM sessions WHERE {_OLD_SESSIONS}", params).rowcount
    return deleted


def pseudonymise_older(db: Database, cutoff: dt.datetime, key: bytes) -> dict[str, int]:
    """Replace member_id and badge older than `cutoff` by their keyed hash; the counts changed."""
    params = {"cutoff": rfc3339(cutoff), "p": f"{PSEUDONYM_PREFIX}%"}
    named = "(member_id NOT LIKE :p OR badge NOT LIKE :p)"
    counts = {"events": 0, "sessions": 0}
    with db.atomic():
        for row in list(db.query(f"SELECT event_id, payload FROM events WHERE {_OLD_EVENTS}"
                                 f" AND {named}", params)):
            event = json.loads(row["payload"])
            for field in ("member_id", "badge"):
                if field in event:
                    event[field] = pseudonym(key, event[field])
            db.execute("UPDATE events SET member_id = ?, badge = ?, payload = ? WHERE event_id = ?",
                       [event.get("member_id"), event.get("badge"),
                        json.dumps(event, ensure_ascii=False), row["event_id"]])
            counts["events"] += 1
        for row in list(db.query(f"SELECT id, member_id, badge FROM sessions WHERE {_OLD_SESSIONS}"
                                 f" AND {named}", params)):
            db.execute("UPDATE sessions SET member_id = ?, badge = ? WHERE id = ?",
                       [pseudonym(key, row["member_id"]), pseudonym(key, row["badge"]), row["id"]])
            counts["sessions"] += 1
    return counts


def member_export(db: Database, member_id: str, now: dt.datetime) -> dict[str, Any]:
    """Everything the logbook holds on one member: sessions, refusals, and the raw events.

    Refusals include those of an unknown badge that the member has used in a session.
    """
    own = sessions(db, now, member=member_id)
    badges = sorted({s["badge"] for s in own if s["badge"]})
    marks = ", ".join("?" for _ in badges)
    badge_clause = f" OR badge IN ({marks})" if badges else ""
    events = [json.loads(r["payload"]) for r in db.query(
        f"SELECT payload FROM events WHERE member_id = ?{badge_clause} ORDER BY ts",
        [member_id, *badges])]
    return {
        "member_id": member_id,
        "generated_at": rfc3339(now),
        "sessions": [{k: s[k] for k in SESSION_KEYS} for s in own],
        "refusals": [{k: e.get(k) for k in ("machine", "ts", "badge", "reason")}
                     for e in events if e["type"] == EventType.ACCESS_DENIED],
        "events": events,
    }
