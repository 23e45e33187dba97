"""The durable event outbox, and the little state that must survive a restart.

Events are written here first, each step's events and state in one
transaction, and leave only when the logbook's archived mark covers them
(it has them all up to that seq), or when they are older than `keep` (a
logbook away for a month must not fill the SD card). WAL with
`synchronous=FULL`: every commit is on disk before it returns, so a power cut
cannot lose an event that explained switching a relay on (with NORMAL the
last commits of a WAL can vanish on power loss).

`seq` comes from a counter kept in the same database: it starts at 1, grows
by one per event and is never reused within this storage's *incarnation*, a
random id made when the storage is first created (a new SD card is a new
incarnation, whose seq starts at 1 again).

An SD card lasts as long as the bytes written to it allow: events covered by
a mark are deleted with the next event written (one transaction, mostly the
same pages), or by `tidy()` after a quiet while, never one transaction per
event or per mark (docs/performance.md has the bytes per event).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.core.model import EventType
from agent.core.timespec import rfc3339

log = logging.getLogger(__name__)

# Each migration is one transaction of one or more statements.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL)",),
    ("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",),
    # The event_id column was never read (the id is in the payload), and its unique
    # index was a large part of each commit, which an "on" tap waits for
    # (docs/performance.md).
    ("CREATE TABLE events_3 (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
     "INSERT INTO events_3 SELECT seq, payload FROM events",
     "DROP TABLE events",
     "ALTER TABLE events_3 RENAME TO events"),
    # Every commit rewrites a meta row (last_seq, the session's heartbeat): without a rowid
    # that is one B-tree page, not a table page and its index's (docs/performance.md).
    ("CREATE TABLE meta_4 (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
     "INSERT INTO meta_4 SELECT key, value FROM meta",
     "DROP TABLE meta",
     "ALTER TABLE meta_4 RENAME TO meta"),
)
# A commit writes whole pages to the WAL: an event and a meta row fit in 1 KiB pages, and each
# commit then writes 2 KiB instead of 8 (docs/performance.md). Only a new file takes it.
PAGE_SIZE = 1024


_compact = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps builds an encoder per call
INCARNATION_BYTES = 8  # 64 random bits, 16 hex digits
TIDY_S = 3600.0  # covered events a quiet machine leaves are deleted after this long (one write an hour at most)…
TIDY_EVENTS = 1000  # …or once this many are covered


class StorageError(RuntimeError):
    """An event could not be made durable (full or failing disk, full outbox)."""


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once: committed, or rolled back on any error
    (SQLite may have rolled back by itself: SQLITE_FULL)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Outbox:
    """One agent's outbox in `path`. Safe to use from several threads (one connection each).

    The link tells it, in memory, what the broker has acknowledged (`acknowledged`)
    and what the logbook has archived (`archived`); the covered events are deleted
    later, many per write.
    """

    def __init__(self, path: Path, machine: str, limit: int = 100_000) -> None:
        self.path = Path(path)
        self.machine = machine
        self.limit = limit
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self.dropped = 0
        self._migrate()
        self.incarnation: str = self._incarnation()
        self._deleted_to: int | None = self.get("archived_seq")  # covered events deleted up to here
        self._mark = self._deleted_to  # the logbook's mark, as last heard; None: never
        self._acked_to = 0  # the broker acknowledged every event held up to here (since this start)
        self._covered_since: float | None = None  # monotonic: since when covered events wait for deletion

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        # Plain sqlite3, not sqlite_utils: importing that costs the running agent megabytes of RSS.
        conn = self._conn()
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY, applied TEXT)")
        done = {row[0] for row in conn.execute("SELECT id FROM migrations").fetchall()}
        for number, statements in enumerate(MIGRATIONS, 1):
            if number not in done:
                with _transaction(conn):
                    if conn.execute("SELECT 1 FROM migrations WHERE id = ?", (number,)).fetchone() is None:
                        for statement in statements:
                            conn.execute(statement)
                        conn.execute("INSERT INTO migrations VALUES (?, ?)",
                                     (number, rfc3339(dt.datetime.now(dt.timezone.utc))))

    def _incarnation(self) -> str:
        """This storage's incarnation, made on first use. An outbox made by an agent older than
        incarnations (it has a last_seq) keeps the empty one: the logbook archived its events
        under it, and its seq goes on."""
        incarnation = self.get("incarnation")
        if incarnation is not None:
            return incarnation
        conn = self._conn()
        with _transaction(conn):
            incarnation = self._get(conn, "incarnation")
            if incarnation is None:
                legacy = self._get(conn, "last_seq") is not None
                incarnation = "" if legacy else secrets.token_hex(INCARNATION_BYTES)
                conn.execute("INSERT INTO meta VALUES ('incarnation', ?)", (json.dumps(incarnation),))
        return incarnation

    def commit(self, records: Iterable[tuple[str, dict[str, Any]]], now: dt.datetime,
               meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Write events `(type, fields)` and `meta` keys in one durable transaction.

        Returns the events as published. Raises StorageError when they could not
        be written; then nothing was.
        """
        records = list(records)
        conn = self._conn()
        ts = rfc3339(now)
        with self._write_lock:
            try:
                with _transaction(conn):
                    updates = dict(meta or {})
                    forgotten = self._forget_archived(conn)
                    if forgotten is not None:
                        updates["archived_seq"] = forgotten
                    last = self._get(conn, "last_seq", 0)
                    if self._may_cross_bound(conn, last, len(records)):
                        depth = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                        if depth + len(records) > self.limit:
                            records = self._at_bound(conn, records, depth)
                    events = []
                    for seq, (kind, fields) in enumerate(records, last + 1):
                        event = {"v": 1, "event_id": str(uuid.uuid4()), "seq": seq, "incarnation": self.incarnation,
                                 "type": kind, "machine": self.machine, "ts": ts, **fields}
                        conn.execute("INSERT INTO events VALUES (?, ?)", (seq, _compact(event)))
                        events.append(event)
                    if events:
                        updates["last_seq"] = events[-1]["seq"]
                    if updates:
                        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                         [(key, json.dumps(value)) for key, value in updates.items()])
            except sqlite3.Error as err:
                raise StorageError(f"cannot write the outbox {self.path}: {err}") from err
            if forgotten is not None:
                self._deleted_to, self._covered_since = forgotten, None
        return events

    def _forget_archived(self, conn: sqlite3.Connection) -> int | None:
        """In the open transaction: delete the events the mark covers that are still here;
        the seq they are deleted up to, to be written with them as `archived_seq`."""
        mark = self._mark
        if mark is None or (self._deleted_to is not None and mark <= self._deleted_to):
            return None
        conn.execute("DELETE FROM events WHERE seq <= ?", (mark,))
        return mark

    def archived(self, seq: int) -> bool:
        """The logbook holds every event of this incarnation up to `seq` (in memory; the
        covered events go with the next write). Whether the mark moved."""
        if self._mark is not None and seq <= self._mark:
            return False
        self._mark = seq
        return True

    def acknowledged(self, seq: int) -> None:
        """The broker has acknowledged every event held up to `seq` (in memory)."""
        self._acked_to = max(self._acked_to, seq)

    def tidy(self, now: float, force: bool = False) -> int:
        """Delete the covered events a quiet machine left (the next event written would take
        them along), when there are many or they have waited `TIDY_S` (monotonic `now`),
        or `force`; the count deleted."""
        mark, done = self._mark, self._deleted_to or 0
        if mark is None or mark <= done:
            return 0
        if self._covered_since is None:
            self._covered_since = now
        if not (force or mark - done >= TIDY_EVENTS or now - self._covered_since >= TIDY_S):
            return 0
        conn = self._conn()
        with self._write_lock:
            try:
                with _transaction(conn):
                    count = conn.execute("SELECT count(*) FROM events WHERE seq <= ?", (mark,)).fetchone()[0]
                    self._forget_archived(conn)
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('archived_seq', ?)", (json.dumps(mark),))
            except sqlite3.Error as err:
                log.error("cannot remove archived events from the outbox: %s", err)
                return 0
        self._deleted_to, self._covered_since = mark, None
        return count

    def prune(self, before: dt.datetime) -> int:
        """Delete the events dated before `before` (older than `[storage] keep`), archived or
        not: with no logbook, nothing grows without bound. The count of those the logbook
        had not confirmed."""
        cutoff, mark = rfc3339(before), self._mark or 0
        conn = self._conn()
        with self._write_lock:
            try:
                with _transaction(conn):
                    old = "json_extract(payload, '$.ts') < ?"
                    lost = conn.execute(f"SELECT count(*) FROM events WHERE seq > ? AND {old}",
                                        (mark, cutoff)).fetchone()[0]
                    conn.execute(f"DELETE FROM events WHERE {old}", (cutoff,))
            except sqlite3.Error as err:
                log.error("cannot remove old events from the outbox: %s", err)
                return 0
        if lost:
            log.warning("deleted %d events older than %s that the logbook never confirmed", lost, cutoff)
        return lost

    def _may_cross_bound(self, conn: sqlite3.Connection, last: int, adding: int) -> bool:
        """Could `adding` more events cross the bound? Cheap: seqs are unique and at most
        `last`, so the depth is at most last - min(seq) + 1 (two index look-ups, where
        count(*) reads every row: milliseconds per tap with a long backlog)."""
        if not adding:
            return False
        oldest = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
        most = 0 if oldest is None else last - oldest + 1
        return most + adding > self.limit

    def _at_bound(self, conn: sqlite3.Connection, records: list[tuple[str, dict[str, Any]]], depth: int) -> list:
        """At the bound the oldest events the broker took (and the logbook has not confirmed)
        make room first; then a session cannot start, ends and lock changes are kept, and
        refusals are dropped."""
        over = depth + len(records) - self.limit
        given_up = conn.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ?"
                                " ORDER BY seq LIMIT ?)", (self._acked_to, over)).rowcount
        if given_up:
            log.error("outbox full (%d events): gave up the %d oldest the broker took but the logbook "
                      "has not confirmed", depth, given_up)
            depth -= given_up
            if depth + len(records) <= self.limit:
                return records
        if any(kind == EventType.SESSION_STARTED for kind, _ in records):
            raise StorageError(f"outbox full ({depth} events waiting for the broker)")
        kept = [r for r in records if r[0] != EventType.ACCESS_DENIED]
        if len(kept) < len(records):
            self.dropped += len(records) - len(kept)
            log.error("outbox full (%d events waiting for the broker): dropped a refusal event "
                      "(%d dropped so far)", depth, self.dropped)
        return kept

    @staticmethod
    def _get(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def get(self, key: str, default: Any = None) -> Any:
        return self._get(self._conn(), key, default)

    def pending(self, after_seq: int = 0, limit: int = 500) -> list[tuple[int, str]]:
        """Events held with a seq after `after_seq`, in `seq` order, as (seq, JSON payload)."""
        return self._conn().execute(
            "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()

    def _count_after(self, seq: int) -> int:
        return self._conn().execute("SELECT count(*) FROM events WHERE seq > ?", (seq,)).fetchone()[0]

    @property
    def depth(self) -> int:
        """Events held, archived or not."""
        return self._conn().execute("SELECT count(*) FROM events").fetchone()[0]

    @property
    def mark(self) -> int | None:
        """The logbook's archived mark as last heard (None: no logbook has confirmed anything)."""
        return self._mark

    @property
    def unacknowledged(self) -> int:
        """Events the broker has not acknowledged (since this start) nor the logbook archived."""
        return self._count_after(max(self._acked_to, self._mark or 0))

    @property
    def unarchived(self) -> int | None:
        """Events held that the logbook has not confirmed; None while it never confirmed any."""
        return None if self._mark is None else self._count_after(self._mark)

    @property
    def kept_from(self) -> int:
        """The oldest seq still kept past the mark: everything before it is archived or gone
        for good (last_seq + 1 when nothing is)."""
        row = self._conn().execute("SELECT min(seq) FROM events WHERE seq > ?", (self._mark or 0,)).fetchone()
        return row[0] if row[0] is not None else self.last_seq + 1

    @property
    def last_seq(self) -> int:
        return self.get("last_seq", 0)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
