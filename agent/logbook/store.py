"""The logbook database: schema as named migrations, and archiving events and statuses.

SQLite in WAL mode (the web view and the query commands read while the
collector writes), `synchronous=FULL` because the collector acknowledges a
message to the broker only once its transaction is committed.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from enum import Enum
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from agent.core.model import EventType
from agent.core.timespec import rfc3339
from agent.logbook.events import SESSION_TYPES
from agent.logbook.pairing import pair

MAX_SEQ = 2**63 - 1
LOCK_TIMEOUT_S = 10.0
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
    DUPLICATE = "duplicate"
    SEQ_CONFLICT = "seq_conflict"  # same machine and seq, another event_id: a reset agent


def _now() -> str:
    return rfc3339(dt.datetime.now(dt.timezone.utc))


def ingest(db: Database, event: dict[str, Any]) -> Outcome:
    """Archive one parsed event once, and rebuild the sessions it touches, in one transaction."""
    with db.atomic():
        known = db.execute("SELECT event_id FROM events WHERE event_id = ? OR (machine = ? AND seq = ?)",
                           [event["event_id"], event["machine"], event["seq"]]).fetchone()
        if known:
            return Outcome.DUPLICATE if known[0] == event["event_id"] else Outcome.SEQ_CONFLICT
        db.execute(
            "INSERT INTO events (event_id, machine, seq, type, ts, member_id, badge, reason,"
            " payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [event["event_id"], event["machine"], event["seq"], event["type"], event["ts"],
             event.get("member_id"), event.get("badge"), event.get("reason"),
             json.dumps(event, ensure_ascii=False), _now()],
        )
        if event["type"] in SESSION_TYPES:
            _rebuild_sessions(db, event["machine"], event["seq"])
    return Outcome.STORED


def _rebuild_sessions(db: Database, machine: str, seq: int) -> None:
    """Re-pair the segments around `seq`: from the start before it to the start after it."""
    lo, hi = db.execute(
        "SELECT (SELECT max(seq) FROM events WHERE machine = :m AND type = :t AND seq < :s),"
        " (SELECT min(seq) FROM events WHERE machine = :m AND type = :t AND seq > :s)",
        {"m": machine, "t": EventType.SESSION_STARTED, "s": seq},
    ).fetchone()
    lo, hi = lo or 0, hi or MAX_SEQ
    placeholders = ", ".join("?" for _ in SESSION_TYPES)
    events = [json.loads(payload) for (payload,) in db.execute(
        f"SELECT payload FROM events WHERE machine = ? AND seq >= ? AND seq < ?"
        f" AND type IN ({placeholders})", [machine, lo, hi, *SESSION_TYPES])]
    db.execute("DELETE FROM sessions WHERE machine = ? AND anchor_seq >= ? AND anchor_seq < ?",
               [machine, lo, hi])
    db["sessions"].insert_all(pair(events))


def record_status(db: Database, machine: str, status: dict[str, Any]) -> None:
    """Keep the latest retained status of each machine, for the fleet view."""
    db["status"].upsert({"machine": machine, "state": status["state"],
                         "payload": json.dumps(status, ensure_ascii=False),
                         "received_at": _now()}, pk="machine")
