"""Member names for the logbook's pages, from the member list the lab publishes on P/members.

Only what changed is written: the list is published again at least daily and
after every change, and rewriting 100,000 names each time would cost the
logbook host's SD card about 11 MB a time (measured; see docs/logbook.md).
"""

from __future__ import annotations

from sqlite_utils import Database

from agent.logbook.events import parse_names

MAX_MEMBER_LIST = 32 * 1024 * 1024  # as the agents: a larger list is refused unread


def record_names(db: Database, payload: bytes) -> int:
    """Keep the names of the list in `payload` (a member snapshot) unless it is older than
    the list they came from; how many names changed (added, renamed or removed).
    MalformedEvent for a payload that is not a member list."""
    version, new = parse_names(payload, MAX_MEMBER_LIST)
    with db.atomic():
        kept = db.execute("SELECT version FROM member_list WHERE id = 1").fetchone()
        if kept is not None and version < kept[0]:
            return 0
        old = dict(db.execute("SELECT member_id, name FROM member_names").fetchall())
        changed = [(i, n) for i, n in new.items() if i not in old or old[i] != n]
        gone = [(i,) for i in old.keys() - new.keys()]
        db.conn.executemany("INSERT OR REPLACE INTO member_names (member_id, name) VALUES (?, ?)", changed)
        db.conn.executemany("DELETE FROM member_names WHERE member_id = ?", gone)
        db.execute("INSERT OR REPLACE INTO member_list (id, version) VALUES (1, ?)", [version])
    return len(changed) + len(gone)


def names(db: Database) -> dict[str, str]:
    return {r["member_id"]: r["name"] for r in db.query("SELECT member_id, name FROM member_names WHERE name IS NOT NULL")}
