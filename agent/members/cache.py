"""The member cache: one SQLite file per agent, replaced whole by each new list.

A snapshot is written to a new file beside the cache and renamed into place,
so a new list is atomic (all of the new list, or the old one untouched) and taps
never wait for it: lookups keep reading the old file until the rename, then
reopen. A lookup is one indexed query on the badge.

Nothing writes the file once it is in place, so lookups open it as immutable:
SQLite then takes no locks and looks for no journal, more than half of a
lookup query's cost. The rename gives a new inode, which `_conn` notices, and
the open file descriptor keeps the old inode's bytes until it is closed. (The
file is not for editing in place: a new list replaces it.)
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from agent.core.model import Member
from agent.members.version import blocks

log = logging.getLogger(__name__)

FILENAME = "members.db"
# Members are numbered by their rowid, and the badge index is built once all
# rows are in: badges are random numbers, and inserting 200,000 of them into a
# live B-tree costs twice as long as one sort at the end. Ids and badges are
# unique because the snapshot checks them; the badge index checks them again.
SCHEMA_VERSION = 2  # PRAGMA user_version; a cache of another version is moved aside
SCHEMA = """
CREATE TABLE members (id TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
                      expires TEXT, roles TEXT NOT NULL, inductions TEXT NOT NULL);
CREATE TABLE badges (badge TEXT NOT NULL, member INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
INDEX = "CREATE UNIQUE INDEX badges_badge ON badges (badge)"
LOOKUP = ("SELECT m.id, m.name, m.status, m.expires, m.roles, m.inductions FROM badges b "
          "JOIN members m ON m.rowid = b.member WHERE b.badge = ?")
# A badge under any of several keys (an EM4100 read's printed numbers): one point query
# each, in one statement that stops at the first found (an IN list would build a
# temporary index first). The list refuses one tag under two members, so at most one matches.
_LOOKUP_NTH = LOOKUP.replace("b.badge = ?", "b.badge = ?{}")
BY_ID = "SELECT id, name, status, expires, roles, inductions FROM members WHERE id = ? LIMIT 1"
MEMBER_COLUMNS = ("rowid", "id", "name", "status", "expires", "roles", "inductions")
BADGE_COLUMNS = ("badge", "member")
# Rows per INSERT statement: one statement of many rows instead of one per row
# (executemany) writes the cache faster (docs/performance.md). The parameters
# stay under 999, the limit of SQLite builds before 3.32.
ROWS = 128
BATCH = 16 * ROWS  # members read before their rows are written


class SnapshotLike(Protocol):
    version: int
    generated_at: str | None

    def members(self) -> Iterator[Member]: ...


class VersionNotNewer(ValueError):
    """The list's version is not above the cached one."""

    def __init__(self, version: int, cached: int) -> None:
        self.version, self.cached, self.same = version, cached, version == cached
        super().__init__(f"version {version} is not newer than the cached version {cached}")


@dataclass(frozen=True)
class CacheInfo:
    version: int | None
    count: int
    generated_at: str | None


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


# A list repeats the same few role sets and induction maps many times: decode and
# encode each distinct one once (members share the read-only map).
@functools.lru_cache(maxsize=1024)
def _roles(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))


@functools.lru_cache(maxsize=1024)
def _inductions(text: str) -> Mapping[str, dt.date | None]:
    return MappingProxyType({k: _date(v) for k, v in json.loads(text).items()})


class _Encoder:
    """Roles and inductions as stored, memoised per distinct value (bounded)."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._roles: dict[frozenset[str], str] = {}
        self._inductions: dict[tuple, str] = {}

    def roles(self, roles: frozenset[str]) -> str:
        text = self._roles.get(roles)
        if text is None:
            text = json.dumps(sorted(roles))
            if len(self._roles) < self.LIMIT:
                self._roles[roles] = text
        return text

    def inductions(self, inductions: Mapping[str, dt.date | None]) -> str:
        key = tuple(inductions.items())
        text = self._inductions.get(key)
        if text is None:
            text = json.dumps({k: v.isoformat() if v else None for k, v in inductions.items()})
            if len(self._inductions) < self.LIMIT:
                self._inductions[key] = text
        return text


class MemberCache:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILENAME
        self._local = threading.local()
        self._replace_lock = threading.Lock()
        self._check_integrity()

    def _check_integrity(self) -> None:
        """A corrupt cache, or one of another schema, is moved aside: the agent starts empty
        and the next list rebuilds it."""
        if not self.path.exists():
            return
        try:
            conn = sqlite3.connect(_uri(self.path, "mode=ro"), uri=True)
            try:
                schema = conn.execute("PRAGMA user_version").fetchone()[0]
                ok = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                conn.execute("SELECT count(*) FROM meta").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as err:
            ok, why = False, str(err)
        else:
            why = "integrity check failed"
            if ok and schema != SCHEMA_VERSION:
                ok, why = False, f"schema {schema}, this fabpass reads schema {SCHEMA_VERSION}"
        if not ok:
            aside = self.path.with_suffix(".corrupt")
            os.replace(self.path, aside)
            log.error("member cache %s cannot be used (%s): moved to %s; waiting for a new member list",
                      self.path, why, aside)

    def _conn(self) -> sqlite3.Connection | None:
        """This thread's connection to the current file, reopened after a rename."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        key = (stat.st_ino, stat.st_mtime_ns)
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        if cached is not None:
            cached[1].close()
        conn = sqlite3.connect(_uri(self.path, "mode=ro&immutable=1"), uri=True, check_same_thread=False)
        self._local.conn = (key, conn)
        return conn

    @property
    def opened(self) -> tuple[int, int] | None:
        """Which file this thread last read (inode, mtime), or None: a list taken since
        is a new file."""
        cached = getattr(self._local, "conn", None)
        return cached[0] if cached is not None else None

    def lookup(self, *keys: str) -> Member | None:
        """The member with a badge listed as one of `keys`."""
        conn = self._conn()
        if conn is None:
            return None
        sql = LOOKUP if len(keys) == 1 else _lookup_any(len(keys))
        row = conn.execute(sql, keys).fetchone()
        return None if row is None else _member(row)

    def member(self, member_id: str) -> Member | None:
        """The member with this id. A scan of the members (ids have no index: only
        enrolments ask, and an index would cost every list's apply time)."""
        conn = self._conn()
        if conn is None:
            return None
        row = conn.execute(BY_ID, (member_id,)).fetchone()
        return None if row is None else _member(row)

    def info(self) -> CacheInfo:
        conn = self._conn()
        if conn is None:
            return CacheInfo(None, 0, None)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        return CacheInfo(int(meta["version"]), int(meta["count"]), meta.get("generated_at") or None)

    @property
    def version(self) -> int | None:
        return self.info().version

    def check_version(self, version: int) -> None:
        """Raise VersionNotNewer unless `version` is above the cached one, where that one
        `blocks` (agent.members.version)."""
        cached = self.version
        if blocks(cached) and version <= cached:
            raise VersionNotNewer(version, cached)

    def replace(self, snapshot: SnapshotLike) -> int:
        """Replace the cache with `snapshot`; returns the member count.

        Raises VersionNotNewer, or whatever the snapshot raises while its
        members are read (a bad member): then the cache is untouched.
        """
        with self._replace_lock:
            self.check_version(snapshot.version)
            tmp = self.path.with_name(FILENAME + ".new")
            tmp.unlink(missing_ok=True)
            try:
                count = self._write(tmp, snapshot)
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
            return count

    @staticmethod
    def _write(path: Path, snapshot: SnapshotLike) -> int:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            # A half-written new file is thrown away, so it needs no journal.
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("BEGIN")
            count = 0
            members: list = []  # the rows' values, one after another
            badges: list = []
            encode = _Encoder()
            for count, member in enumerate(snapshot.members(), start=1):
                members += (
                    count, member.id, member.name, member.status,
                    member.expires.isoformat() if member.expires else None,
                    encode.roles(member.roles), encode.inductions(member.inductions),
                )
                for badge in member.badges:
                    badges += (badge, count)
                if len(members) >= len(MEMBER_COLUMNS) * BATCH:
                    _flush(conn, members, badges)
            _flush(conn, members, badges)
            conn.execute(INDEX)
            meta = {"version": snapshot.version, "count": count, "generated_at": snapshot.generated_at or ""}
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
            conn.execute("COMMIT")
        finally:
            conn.close()
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        return count

    def close(self) -> None:
        cached = getattr(self._local, "conn", None)
        if cached is not None:
            cached[1].close()
            self._local.conn = None


def _member(row: tuple) -> Member:
    member_id, name, status, expires, roles, inductions = row
    return Member(id=member_id, name=name, status=status, expires=_date(expires),
                  roles=_roles(roles), inductions=_inductions(inductions))


@functools.lru_cache(maxsize=4)
def _lookup_any(count: int) -> str:
    return " UNION ALL ".join(_LOOKUP_NTH.format(n) for n in range(1, count + 1)) + " LIMIT 1"


def _flush(conn: sqlite3.Connection, members: list, badges: list) -> None:
    _insert(conn, "members", MEMBER_COLUMNS, members)
    _insert(conn, "badges", BADGE_COLUMNS, badges)
    members.clear()
    badges.clear()


def _insert(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], values: list) -> None:
    """Insert rows whose values are given one after another, ROWS rows per statement."""
    step = len(columns) * ROWS
    for start in range(0, len(values), step):
        chunk = values[start:start + step]
        conn.execute(_insert_sql(table, columns, len(chunk) // len(columns)), chunk)


@functools.lru_cache(maxsize=8)  # each table's full statement, and its last, shorter one
def _insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([row] * rows)


def _uri(path: Path, query: str) -> str:
    """An SQLite URI for `path`: `?`, `#` and `%` in a directory name are not parameters."""
    return f"{Path(path).absolute().as_uri()}?{query}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
