"""The durable event outbox, and the little state that must survive a restart.

Events are written here first, each step's events and state in one
transaction, and leave only when the broker has acknowledged them. WAL with
`synchronous=FULL`: every commit is on disk before it returns, so a power cut
cannot lose an event that explained switching a relay on (with NORMAL the
last commits of a WAL can vanish on power loss). `seq` comes from a counter
kept in the same database: it starts at 1, grows by one per event and is
never reused, even after every event has been delivered and deleted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterable
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
)


_compact = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps builds an encoder per call


class StorageError(RuntimeError):
    """An event could not be made durable (full or failing disk, full outbox)."""


class Outbox:
    """One agent's outbox in `path`. Safe to use from several threads (one connection each)."""

    def __init__(self, path: Path, machine: str, limit: int = 100_000) -> None:
        self.path = Path(path)
        self.machine = machine
        self.limit = limit
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self.dropped = 0
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
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
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if conn.execute("SELECT 1 FROM migrations WHERE id = ?", (number,)).fetchone() is None:
                        for statement in statements:
                            conn.execute(statement)
                        conn.execute("INSERT INTO migrations VALUES (?, ?)",
                                     (number, rfc3339(dt.datetime.now(dt.timezone.utc))))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

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
                conn.execute("BEGIN IMMEDIATE")
                try:
                    last = self._get(conn, "last_seq", 0)
                    if self._may_cross_bound(conn, last, len(records)):
                        depth = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                        if depth + len(records) > self.limit:
                            records = self._at_bound(records, depth)
                    events = []
                    for seq, (kind, fields) in enumerate(records, last + 1):
                        event = {"v": 1, "event_id": str(uuid.uuid4()), "seq": seq, "type": kind,
                                 "machine": self.machine, "ts": ts, **fields}
                        conn.execute("INSERT INTO events VALUES (?, ?)", (seq, _compact(event)))
                        events.append(event)
                    updates = dict(meta or {})
                    if events:
                        updates["last_seq"] = events[-1]["seq"]
                    if updates:
                        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                         [(key, json.dumps(value)) for key, value in updates.items()])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back itself (SQLITE_FULL)
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise StorageError(f"cannot write the outbox {self.path}: {err}") from err
        return events

    def _may_cross_bound(self, conn: sqlite3.Connection, last: int, adding: int) -> bool:
        """Could `adding` more events cross the bound? Cheap: seqs are unique and at most
        `last`, so the depth is at most last - min(seq) + 1 (two index look-ups, where
        count(*) reads every row: milliseconds per tap with a long backlog)."""
        if not adding:
            return False
        oldest = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
        most = 0 if oldest is None else last - oldest + 1
        return most + adding > self.limit

    def _at_bound(self, records: list[tuple[str, dict[str, Any]]], depth: int) -> list:
        """At the bound a session cannot start; ends and lock changes are kept; refusals are dropped."""
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
        """Events not yet acknowledged, in `seq` order, as (seq, JSON payload)."""
        return self._conn().execute(
            "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()

    def acknowledge(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        conn = self._conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                # One statement per 500 seqs rather than one per seq: a fifth of the CPU when
                # a backlog is replayed.
                for first in range(0, len(seqs), 500):
                    chunk = seqs[first:first + 500]
                    conn.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                log.error("cannot remove acknowledged events from the outbox: %s", err)

    @property
    def depth(self) -> int:
        return self._conn().execute("SELECT count(*) FROM events").fetchone()[0]

    @property
    def last_seq(self) -> int:
        return self.get("last_seq", 0)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
