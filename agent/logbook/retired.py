"""Machines the logbook has seen, and those retired (`fabpass logbook retire MACHINE`):
a machine taken out of service is no longer announced to Home Assistant, listed in
the fleet, or reported offline. Its events stay in the archive; `--undo` brings it back."""

from __future__ import annotations

import datetime as dt

from sqlite_utils import Database

from agent.core.timespec import rfc3339


def retire(db: Database, machine: str, now: dt.datetime) -> None:
    db["retired"].upsert({"machine": machine, "ts": rfc3339(now)}, pk="machine")


def restore(db: Database, machine: str) -> bool:
    """Bring a retired machine back; False when it was not retired."""
    with db.atomic():
        return db.execute("DELETE FROM retired WHERE machine = ?", [machine]).rowcount > 0


def retired_machines(db: Database) -> set[str]:
    return {row["machine"] for row in db.query("SELECT machine FROM retired")}


def known_machines(db: Database) -> list[str]:
    """Every machine with a status or an event in the archive, retired ones included."""
    return [row["machine"] for row in db.query(
        "SELECT machine FROM status UNION SELECT DISTINCT machine FROM events ORDER BY machine")]
