"""The logbook database: schema as named migrations, and archiving what the collector receives.

SQLite in WAL mode (the web view and the query commands read while the
collector writes), `synchronous=FULL` because the collector acknowledges a
message to the broker only once its transaction is committed.

An event is named by (machine, incarnation, seq): a machine's agent counts
`seq` from 1 in each incarnation of its storage (a new SD card is a new
incarnation), and `event_id` is unique for ever. The archived *mark* of an
incarnation is the seq up to which every one of its events is archived (or,
past a floor the agent reported, known to be gone for good); the collector
publishes the marks so that agents can forget what is safe.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from agent.core.model import EventType
from agent.core.timespec import rfc3339
from agent.logbook.events import SESSION_TYPES
from agent.logbook.pairing import pair

log = logging.getLogger(__name__)

MAX_SEQ = 2**63 - 1
LOCK_TIMEOUT_S = 10.0
QUARANTINE_KEPT = 10_000  # the newest rows; a flood from a stolen account cannot fill the disk
QUARANTINE_PAYLOAD = 64 * 1024  # characters of a quarantined payload that are kept
migrations = Migrations("fabpass-logbook")


class LogbookMissing(FileNotFoundError):
    """A query named a database file that does not exist (a typo, most likely)."""


@migrations(name="001_events_and_sessions")
def _events_and_sessions(db: Database) -> None:
    db["events"].create(
        {"event_id": str, "machine": str, "seq": int, "type": str, "ts": str,
         "member_id": str, "badge": str, "reason": str, "payload": str, "received_at": str},
        pk="event_id", not_null={"machine", "seq", "type", "ts", "payload"},
    )
    db["events"].create_index(["machine", "seq"], unique=True)
    db["events"].create_index(["type", "ts"])
    db["events"].create_index(["member_id"])
    db["sessions"].create(
        {"id": int, "machine": str, "anchor_seq": int, "start_seq": int, "end_seq": int,
         "member_id": str, "badge": str, "start": str, "end": str, "duration_s": float,
         "end_reason": str, "start_estimated": bool, "end_estimated": bool},
        pk="id", not_null={"machine", "anchor_seq", "start"},
    )
    db["sessions"].create_index(["machine", "anchor_seq"], unique=True)
    db["sessions"].create_index(["start"])
    db["sessions"].create_index(["member_id", "start"])


@migrations(name="002_fleet_status")
def _fleet_status(db: Database) -> None:
    db["status"].create(
        {"machine": str, "state": str, "payload": str, "received_at": str},
        pk="machine", not_null={"state", "payload"},
    )


@migrations(name="003_maintenance")
def _maintenance(db: Database) -> None:
    db["services"].create({"id": int, "machine": str, "ts": str, "note": str},
                          pk="id", not_null={"machine", "ts"})
    db["services"].create_index(["machine", "ts"])
    db["service_intervals"].create({"machine": str, "every_s": float}, pk="machine",
                                   not_null={"every_s"})


@migrations(name="004_settled_grants")
def _settled_grants(db: Database) -> None:
    """Grants (badge_enrolled, induction_granted events) that `members sync --db` found in the
    lab's source: they are no longer pending (agent.logbook.grants)."""
    db["settled_grants"].create({"event_id": str, "settled_at": str}, pk="event_id", not_null={"settled_at"})


@migrations(name="005_retired_machines")
def _retired_machines(db: Database) -> None:
    """Machines taken out of service (`fabpass logbook retire`): no longer announced or listed."""
    db["retired"].create({"machine": str, "ts": str}, pk="machine", not_null={"ts"})


@migrations(name="006_member_names")
def _member_names(db: Database) -> None:
    """Each member's name in the newest list seen on P/members (member_list: its version)."""
    db["member_names"].create({"member_id": str, "name": str}, pk="member_id")
    db["member_list"].create({"id": int, "version": int}, pk="id", not_null={"version"})


@migrations(name="007_incarnations_marks_quarantine")
def _incarnations(db: Database) -> None:
    """Events and sessions keyed by (machine, incarnation, seq): what was archived before
    is the empty incarnation's. The marks of the empty incarnation start where its
    archived seqs stop running 1, 2, 3…"""
    for table, seq in (("events", "seq"), ("sessions", "anchor_seq")):
        db[table].add_column("incarnation", str, not_null_default="")
        db.execute(f"DROP INDEX idx_{table}_machine_{seq}")
        db[table].create_index(["machine", "incarnation", seq], unique=True)
    db["marks"].create({"machine": str, "incarnation": str, "seq": int, "updated": str},
                       pk=("machine", "incarnation"), not_null={"seq", "updated"})
    db["gaps"].create({"id": int, "machine": str, "incarnation": str, "first_seq": int, "last_seq": int,
                       "missing": int, "noted": str}, pk="id")
    db["quarantine"].create({"id": int, "topic": str, "payload": str, "error": str, "received": str},
                            pk="id", not_null={"topic", "payload", "error", "received"})
    for (machine,) in db.execute("SELECT DISTINCT machine FROM events").fetchall():
        _advance(db, machine, "", 0)


@migrations(name="008_dismissed_grants")
def _dismissed_grants(db: Database) -> None:
    """Grants the lab refused (`fabpass members dismiss`): no longer pending, never merged."""
    db["dismissed_grants"].create({"event_id": str, "dismissed_at": str, "by": str}, pk="event_id",
                                  not_null={"dismissed_at", "by"})


def open_db(path: str | Path, create: bool = False) -> Database:
    """The logbook at `path`, migrated to the current schema; `create` makes a new file if needed."""
    path = Path(path)
    if not create and not path.exists():
        raise LogbookMissing(f"{path}: no logbook database there (start `fabpass logbook run` first)")
    db = Database(sqlite3.connect(str(path), check_same_thread=False, timeout=LOCK_TIMEOUT_S))
    _enable_wal(db)
    db.execute("PRAGMA synchronous=FULL")
    if migrations.pending(db):
        # Under a write lock, so that a query run while the collector starts
        # does not race it to create the same tables; apply() checks again.
        db.execute("BEGIN IMMEDIATE")
        try:
            migrations.apply(db)
        except BaseException:
            db.rollback()
            raise
        db.commit()
    return db


def _enable_wal(db: Database) -> None:
    """Switch the file to WAL, which it keeps (then this only reads the mode).

    SQLite refuses the switch at once, without waiting out the busy timeout,
    while another connection is writing: a query run as the collector creates
    a new logbook met "database is locked". So wait and try again, up to the
    same timeout.
    """
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() >= deadline:
                raise
        time.sleep(0.02)


class Outcome(str, Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same event_id again: a replay or a redelivery


class NotArchivable(ValueError):
    """A well-formed event whose name is taken by another (a cloned SD card, a forgery)."""


@dataclass(frozen=True)
class Archived:
    outcome: Outcome
    mark: int  # the incarnation's archived mark after this event


def _now() -> str:
    return rfc3339(dt.datetime.now(dt.timezone.utc))


def ingest(db: Database, event: dict[str, Any]) -> Archived:
    """Archive one parsed event once, rebuild the sessions it touches and move its
    incarnation's mark, in one transaction. NotArchivable when its (machine,
    incarnation, seq) or its event_id already names another event."""
    machine, incarnation, seq = event["machine"], event.get("incarnation", ""), event["seq"]
    with db.atomic():
        known = db.execute(
            "SELECT event_id, machine, incarnation, seq FROM events WHERE event_id = ?"
            " UNION ALL SELECT event_id, machine, incarnation, seq FROM events"
            " WHERE machine = ? AND incarnation = ? AND seq = ?",
            [event["event_id"], machine, incarnation, seq]).fetchone()
        if known:
            if tuple(known) != (event["event_id"], machine, incarnation, seq):
                raise NotArchivable(
                    f"{machine} seq {seq} (incarnation {incarnation!r}) is archived as event {known[0]} "
                    f"of {known[1]} seq {known[3]} (incarnation {known[2]!r}): a cloned storage or a forgery")
            return Archived(Outcome.DUPLICATE, _mark(db, machine, incarnation))
        db.execute(
            "INSERT INTO events (event_id, machine, incarnation, seq, type, ts, member_id, badge, reason,"
            " payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [event["event_id"], machine, incarnation, seq, event["type"], event["ts"],
             event.get("member_id"), event.get("badge"), event.get("reason"),
             json.dumps(event, ensure_ascii=False), _now()],
        )
        if event["type"] in SESSION_TYPES:
            _rebuild_sessions(db, machine, incarnation, seq)
        return Archived(Outcome.STORED, _advance(db, machine, incarnation, 0))


def _mark(db: Database, machine: str, incarnation: str) -> int:
    row = db.execute("SELECT seq FROM marks WHERE machine = ? AND incarnation = ?",
                     [machine, incarnation]).fetchone()
    return row[0] if row else 0


def _advance(db: Database, machine: str, incarnation: str, floor: int) -> int:
    """Move the mark of (machine, incarnation) up to `floor`, then through every archived
    seq that follows it without a gap; returns the mark. Run inside a transaction."""
    mark = old = _mark(db, machine, incarnation)
    if floor > mark:
        archived = db.execute("SELECT count(*) FROM events WHERE machine = ? AND incarnation = ?"
                              " AND seq > ? AND seq <= ?", [machine, incarnation, mark, floor]).fetchone()[0]
        if archived < floor - mark:
            missing = floor - mark - archived
            log.warning("%s (incarnation %r): %d events between seq %d and %d never reached the logbook, "
                        "and the machine keeps them no longer", machine, incarnation, missing, mark + 1, floor)
            db["gaps"].insert({"machine": machine, "incarnation": incarnation, "first_seq": mark + 1,
                               "last_seq": floor, "missing": missing, "noted": _now()})
        mark = floor
    for (seq,) in db.execute("SELECT seq FROM events WHERE machine = ? AND incarnation = ? AND seq > ?"
                             " ORDER BY seq", [machine, incarnation, mark]):
        if seq != mark + 1:
            break
        mark = seq
    if mark != old or not db.execute("SELECT 1 FROM marks WHERE machine = ? AND incarnation = ?",
                                      [machine, incarnation]).fetchone():
        db.execute("INSERT OR REPLACE INTO marks VALUES (?, ?, ?, ?)", [machine, incarnation, mark, _now()])
    return mark


def _rebuild_sessions(db: Database, machine: str, incarnation: str, seq: int) -> None:
    """Re-pair the segments around `seq`: from the start before it to the start after it."""
    lo, hi = db.execute(
        "SELECT (SELECT max(seq) FROM events WHERE machine = :m AND incarnation = :i AND type = :t AND seq < :s),"
        " (SELECT min(seq) FROM events WHERE machine = :m AND incarnation = :i AND type = :t AND seq > :s)",
        {"m": machine, "i": incarnation, "t": EventType.SESSION_STARTED, "s": seq},
    ).fetchone()
    lo, hi = lo or 0, hi or MAX_SEQ
    placeholders = ", ".join("?" for _ in SESSION_TYPES)
    events = [json.loads(payload) for (payload,) in db.execute(
        f"SELECT payload FROM events WHERE machine = ? AND incarnation = ? AND seq >= ? AND seq < ?"
        f" AND type IN ({placeholders})", [machine, incarnation, lo, hi, *SESSION_TYPES])]
    db.execute("DELETE FROM sessions WHERE machine = ? AND incarnation = ? AND anchor_seq >= ? AND anchor_seq < ?",
               [machine, incarnation, lo, hi])
    db["sessions"].insert_all(pair(events))


def record_status(db: Database, machine: str, status: dict[str, Any]) -> int | None:
    """Keep the latest retained status of each machine, for the fleet view. A status
    that names its incarnation gives that incarnation a mark (the floor of what its
    agent still keeps, `kept_from`, moves it): returns the mark, or None."""
    incarnation = status.get("incarnation")
    with db.atomic():
        db["status"].upsert({"machine": machine, "state": status["state"],
                             "payload": json.dumps(status, ensure_ascii=False),
                             "received_at": _now()}, pk="machine")
        if not isinstance(incarnation, str):
            return None
        return _advance(db, machine, incarnation, (status.get("kept_from") or 1) - 1)


def marks(db: Database) -> list[dict[str, Any]]:
    """Every mark: machine, incarnation, seq, updated (RFC 3339 UTC)."""
    return list(db.query("SELECT machine, incarnation, seq, updated FROM marks ORDER BY machine, updated"))


def quarantine(db: Database, topic: str, payload: bytes, error: str) -> None:
    """Keep what could not be archived, for a technician to look at (`logbook quarantine`)."""
    text = payload.decode("utf-8", "backslashreplace")
    if len(text) > QUARANTINE_PAYLOAD:
        error += f" (payload cut to {QUARANTINE_PAYLOAD} of {len(text)} characters)"
        text = text[:QUARANTINE_PAYLOAD]
    with db.atomic():
        db.execute("INSERT INTO quarantine (topic, payload, error, received) VALUES (?, ?, ?, ?)",
                   [topic.encode("utf-8", "backslashreplace").decode()[:1000], text, error[:2000], _now()])
        db.execute("DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?", [QUARANTINE_KEPT])

