"""Maintenance counters: hours of use since each machine's last recorded service.

A service interval ("every 200h of use") comes from the database (`fabpass
logbook service MACHINE --every 200h`) or from a TOML file that overrides it:

    [service_every]
    laser-1 = "200h"
    cnc-1 = "500h"
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.core.timespec import parse_duration, parse_rfc3339, rfc3339


class ThresholdsError(ValueError):
    """A thresholds file that cannot be used; the message names the file and the key."""


def record_service(db: Database, machine: str, at: dt.datetime, note: str | None) -> None:
    db["services"].insert({"machine": machine, "ts": rfc3339(at), "note": note})


def set_interval(db: Database, machine: str, every_s: float) -> None:
    db["service_intervals"].upsert({"machine": machine, "every_s": every_s}, pk="machine")


def load_thresholds(path: str | Path) -> dict[str, float]:
    """Seconds of use between services, per machine, from a TOML file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ThresholdsError(f"{path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ThresholdsError(f"{path}: {err}") from None
    unknown = set(data) - {"service_every"}
    if unknown:
        raise ThresholdsError(f"{path}: unknown key {sorted(unknown)[0]!r}; expected [service_every]")
    table = data.get("service_every", {})
    if not isinstance(table, dict):
        raise ThresholdsError(f"{path}: service_every must be a table of machine = \"200h\"")
    thresholds = {}
    for machine, every in table.items():
        try:
            thresholds[machine] = parse_duration(every)
        except ValueError as err:
            raise ThresholdsError(f"{path}: service_every.{machine}: {err}") from None
        if thresholds[machine] <= 0:
            raise ThresholdsError(f"{path}: service_every.{machine}: must be more than zero")
    return thresholds


def _seconds_used(db: Database, machine: str, since: str | None, now: dt.datetime) -> float:
    """Seconds of use on `machine` after `since` (all time if None), open sessions up to `now`."""
    floor = parse_rfc3339(since) if since else None
    total = 0.0
    for row in db.query('SELECT start, "end", duration_s FROM sessions WHERE machine = ?'
                        ' AND ("end" IS NULL OR "end" > ?)', [machine, since or ""]):
        start = parse_rfc3339(row["start"])
        end = start + dt.timedelta(seconds=row["duration_s"]) if row["end"] else now
        total += max(0.0, (end - max(start, floor or start)).total_seconds())
    return total


def counters(db: Database, now: dt.datetime, thresholds: dict[str, float] | None = None,
             machine: str | None = None) -> list[dict[str, Any]]:
    """Per machine (or only `machine`): last service, hours since, interval and whether a
    service is due."""
    every = {r["machine"]: r["every_s"] for r in db.query("SELECT * FROM service_intervals")}
    every.update(thresholds or {})
    last = {r["machine"]: r for r in db.query(
        "SELECT machine, max(ts) AS ts, note FROM services GROUP BY machine")}
    if machine is not None:
        machines = [machine]
    else:
        machines = sorted({r["machine"] for r in db.query("SELECT DISTINCT machine FROM sessions")}
                          | set(every) | set(last))
    result = []
    for machine in machines:
        service = last.get(machine)
        used = _seconds_used(db, machine, service["ts"] if service else None, now)
        interval = every.get(machine)
        result.append({
            "machine": machine,
            "last_service": service["ts"] if service else None,
            "last_note": service["note"] if service else None,
            "hours_since_service": round(used / 3600, 2),
            "every_hours": round(interval / 3600, 2) if interval else None,
            "due": interval is not None and used >= interval,
        })
    return result
