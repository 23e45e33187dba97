"""Member names for the logbook's pages, from the member list the lab publishes on P/members."""

from __future__ import annotations

import json

from sqlite_utils import Database

from agent.logbook.events import MalformedEvent


def record_names(db: Database, payload: bytes) -> int:
    """Replace the names with those of the list in `payload` (a member snapshot), unless
    it is older than the names kept; how many members it names."""
    try:
        snapshot = json.loads(payload)
        version = snapshot["version"]
        members = [(m["id"], m.get("name") or None) for m in snapshot["members"]]
    except (ValueError, TypeError, KeyError) as err:
        raise MalformedEvent(f"not a member list: {err!r}") from None
    if not isinstance(version, int) or not all(isinstance(i, str) for i, _ in members):
        raise MalformedEvent("not a member list: no integer version or a member id that is not text")
    with db.atomic():
        kept = db.execute("SELECT max(version) FROM member_names").fetchone()[0]
        if kept is not None and version < kept:
            return 0
        db.execute("DELETE FROM member_names")
        db["member_names"].insert_all({"member_id": i, "name": n, "version": version} for i, n in members)
    return len(members)


def names(db: Database) -> dict[str, str]:
    return {r["member_id"]: r["name"] for r in db.query("SELECT member_id, name FROM member_names WHERE name IS NOT NULL")}
