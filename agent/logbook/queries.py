"""Reading the logbook: sessions, the usage report, exports.

Times in and out are RFC 3339 UTC strings in the database (they sort as
text); callers pass aware datetimes and `now`, so every answer is reproducible.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlite_utils import Database

from agent.core.model import EventType
from agent.core.timespec import parse_rfc3339, rfc3339

SESSION_KEYS = ("machine", "member_id", "badge", "start", "end", "duration_s", "end_reason", "end_estimated", "name")


def sessions(db: Database, now: dt.datetime, *, machine: str | None = None,
             member: str | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, by_start: bool = False) -> list[dict[str, Any]]:
    """Sessions oldest first, with exactly SESSION_KEYS.

    By default a session matches a period when it overlaps it (who was on the
    laser between 14:00 and 18:00?); with `by_start`, when it started in it
    (each session billed in exactly one period). An open session has `end`
    None and `duration_s` the seconds so far. `end_estimated` is true for a
    session a crash or power cut ended (its end is the agent's last heartbeat);
    `name` is the member's in the newest member list the logbook has seen.
    """
    where, params = ["1 = 1"], {}
    if machine:
        where.append("s.machine = :machine")
        params["machine"] = machine
    if member:
        where.append("s.member_id = :member")
        params["member"] = member
    if since:
        where.append("s.start >= :since" if by_start else '(s."end" IS NULL OR s."end" >= :since)')
        params["since"] = rfc3339(since)
    if until:
        where.append("s.start < :until")
        params["until"] = rfc3339(until)
    rows = db.query(
        f'SELECT s.machine, s.member_id, s.badge, s.start, s."end", s.duration_s, s.end_reason,'
        f" s.end_estimated, n.name FROM sessions s LEFT JOIN member_names n ON n.member_id = s.member_id"
        f" WHERE {' AND '.join(where)} ORDER BY s.start, s.machine", params)
    return [_completed(row, now) for row in rows]


def _completed(row: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    row["end_estimated"] = bool(row["end_estimated"])
    if row["end"] is None:
        row["duration_s"] = round(max(0.0, (now - parse_rfc3339(row["start"])).total_seconds()), 3)
    return row


def refusals(db: Database, *, machine: str | None = None, member: str | None = None,
             reason: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """access_denied events, newest first: machine, ts, member_id, badge, reason."""
    where, params = ["type = :type"], {"type": EventType.ACCESS_DENIED}
    for key, value in (("machine", machine), ("member_id", member), ("reason", reason)):
        if value:
            where.append(f"{key} = :{key}")
            params[key] = value
    if since:
        where.append("ts >= :since")
        params["since"] = rfc3339(since)
    if until:
        where.append("ts < :until")
        params["until"] = rfc3339(until)
    sql = (f"SELECT machine, ts, member_id, badge, reason FROM events WHERE {' AND '.join(where)}"
           " ORDER BY ts DESC, machine")
    if limit:
        sql += f" LIMIT {int(limit)}"
    return list(db.query(sql, params))


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 2)


def _seconds_by_hour_of_day(start: dt.datetime, end: dt.datetime, tz: dt.tzinfo) -> Iterator[tuple[int, float]]:
    """Split a session at the hour boundaries of the local clock (stepping in absolute time, so
    a DST change neither loses nor doubles any)."""
    moment = start
    while moment < end:
        local = moment.astimezone(tz)
        into = dt.timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
        boundary = min(end, moment - into + dt.timedelta(hours=1))
        yield local.hour, (boundary - moment).total_seconds()
        moment = boundary


def report(db: Database, now: dt.datetime, tz: dt.tzinfo, *, since: dt.datetime | None = None,
           until: dt.datetime | None = None) -> dict[str, Any]:
    """Hours per machine and per member (sessions started in the period), of them the
    hours whose end is estimated (a crash or power cut ended the session at its last
    heartbeat), refusals by machine and reason, and hours of use by hour of the day in `tz`."""
    rows = sessions(db, now, since=since, until=until, by_start=True)
    per_machine: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    per_member: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    by_hour = [0.0] * 24
    for row in rows:
        per_machine[row["machine"]].append((row["duration_s"], row["end_estimated"]))
        per_member[row["member_id"]].append((row["duration_s"], row["end_estimated"]))
        start = parse_rfc3339(row["start"])
        end = start + dt.timedelta(seconds=row["duration_s"])
        for hour, seconds in _seconds_by_hour_of_day(start, end, tz):
            by_hour[hour] += seconds
    refused: dict[tuple[str, str], int] = defaultdict(int)
    for refusal in refusals(db, since=since, until=until):
        refused[refusal["machine"], refusal["reason"]] += 1

    def usage(groups: dict[str, list[tuple[float, bool]]], key: str) -> list[dict[str, Any]]:
        return sorted(({key: name, "hours": _hours(sum(d for d, _ in done)), "sessions": len(done),
                        "estimated_hours": _hours(sum(d for d, estimated in done if estimated))}
                       for name, done in groups.items()), key=lambda u: (-u["hours"], u[key]))

    return {
        "since": rfc3339(since) if since else None,
        "until": rfc3339(until) if until else None,
        "hours": _hours(sum(row["duration_s"] for row in rows)),
        "estimated_hours": _hours(sum(row["duration_s"] for row in rows if row["end_estimated"])),
        "machines": usage(per_machine, "machine"),
        "members": usage(per_member, "member_id"),
        "refusals": [{"machine": m, "reason": r, "count": n} for (m, r), n in
                     sorted(refused.items(), key=lambda item: (-item[1], item[0]))],
        "busiest_hours": sorted(({"hour": h, "hours": _hours(s)} for h, s in enumerate(by_hour) if s),
                                key=lambda b: (-b["hours"], b["hour"])),
        "gaps": gaps(db, since=since, until=until),
        # at the machine
        "inductions": inductions_given(db, since=since, until=until),
        "out_of_order": out_of_order_per_machine(db, since=since, until=until),
        "bypass": bypass_time(db, now, since=since, until=until),
    }


# -- at the machine ---------------------------------------------------------------------------------

def _period(since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, dict[str, str]]:
    where, params = "", {}
    if since:
        where += " AND ts >= :since"
        params["since"] = rfc3339(since)
    if until:
        where += " AND ts < :until"
        params["until"] = rfc3339(until)
    return where, params


def inductions_given(db: Database, *, since: dt.datetime | None = None,
                     until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Inductions given at the machines in the period, per trainer and induction, most first."""
    where, params = _period(since, until)
    rows = db.query(
        "SELECT json_extract(payload, '$.by') AS trainer, json_extract(payload, '$.induction') AS induction,"
        f" count(*) AS count FROM events WHERE type = :type{where} GROUP BY trainer, induction"
        " ORDER BY count DESC, trainer, induction", {"type": EventType.INDUCTION_GRANTED, **params})
    return list(rows)


def out_of_order_per_machine(db: Database, *, since: dt.datetime | None = None,
                             until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Out-of-order reports per machine in the period, with the last one's time, most first
    (out_of_order_reports lists the reports themselves)."""
    where, params = _period(since, until)
    rows = db.query(
        f"SELECT machine, count(*) AS count, max(ts) AS last FROM events WHERE type = :type{where}"
        " GROUP BY machine ORDER BY count DESC, machine", {"type": EventType.OUT_OF_ORDER_REPORTED, **params})
    return list(rows)


def bypass_time(db: Database, now: dt.datetime, *, since: dt.datetime | None = None,
                until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Hours each machine ran on its bypass key within the period (a bypass still on counts
    up to `now`), and how many times it was turned on; most hours first. A second
    bypass_on before a bypass_off (the agent restarted, say) continues the first."""
    begin, end = since or dt.datetime.min.replace(tzinfo=dt.timezone.utc), min(until or now, now)
    rows = db.execute("SELECT machine, type, ts FROM events WHERE type IN (?, ?) ORDER BY machine, ts, seq",
                      [EventType.BYPASS_ON, EventType.BYPASS_OFF]).fetchall()
    spans: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    opened: dict[str, dt.datetime] = {}
    for machine, kind, ts in rows:
        moment = parse_rfc3339(ts)
        if kind == EventType.BYPASS_ON:
            opened.setdefault(machine, moment)
        elif machine in opened:
            spans[machine].append((opened.pop(machine), moment))
    for machine, moment in opened.items():
        spans[machine].append((moment, now))
    result = []
    for machine, pairs in spans.items():
        inside = [(max(a, begin), min(b, end)) for a, b in pairs if a < end and b > begin]
        if inside:
            seconds = sum((b - a).total_seconds() for a, b in inside)
            result.append({"machine": machine, "hours": _hours(seconds), "times": len(inside)})
    return sorted(result, key=lambda r: (-r["hours"], r["machine"]))


def gaps(db: Database, *, since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Events the logbook knows it will never have (noted in the period): their agent no longer
    kept them when it first reported (a logbook away for longer than the agents' `keep`)."""
    rows = db.query("SELECT machine, incarnation, first_seq, last_seq, missing, noted FROM gaps"
                    " WHERE noted >= :since AND noted < :until ORDER BY noted",
                    {"since": rfc3339(since) if since else "", "until": rfc3339(until) if until else "~"})
    return list(rows)


QUARANTINE_KEYS = ("topic", "payload", "error", "received")


def quarantined(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """What the collector could not archive, oldest first (the newest `limit`)."""
    rows = list(db.query("SELECT topic, payload, error, received FROM quarantine ORDER BY id DESC"
                         + (f" LIMIT {int(limit)}" if limit else "")))
    return rows[::-1]


def weekly_hours(db: Database, now: dt.datetime, tz: dt.tzinfo, weeks: int,
                 machine: str | None = None) -> dict[str, dict[str, float]]:
    """Hours per machine (or only `machine`) for each of the last `weeks` weeks (Monday first,
    in `tz`), by start; sessions dated after this week (a Pi whose clock runs ahead) are in
    none of them."""
    today = now.astimezone(tz).date()
    monday = today - dt.timedelta(days=today.weekday() + 7 * (weeks - 1))
    since = dt.datetime.combine(monday, dt.time(), tzinfo=tz)
    result: dict[str, dict[str, float]] = {
        (monday + dt.timedelta(weeks=i)).isoformat(): {} for i in range(weeks)}
    for row in sessions(db, now, machine=machine, since=since, by_start=True):
        day = parse_rfc3339(row["start"]).astimezone(tz).date()
        hours = result.get((day - dt.timedelta(days=day.weekday())).isoformat())
        if hours is None:
            continue
        hours[row["machine"]] = hours.get(row["machine"], 0.0) + row["duration_s"] / 3600
    return result


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> Any:
    """`value` made safe for a spreadsheet: a text that starts like a formula (= + - @,
    a tab or a carriage return) gets a leading `'`, so that a member id or a reason
    written by a stranger is shown, never run (CSV injection). Numbers stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def to_csv(rows: Iterable[dict[str, Any]], keys: Sequence[str] = SESSION_KEYS) -> str:
    """Rows (the sessions, by default) as CSV for a spreadsheet (RFC 4180: CRLF between
    rows, so that a cell holding a lone CR is quoted too), every cell through
    spreadsheet_cell; booleans (`end_estimated`) are `true` or `false`."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: spreadsheet_cell(("true" if v else "false") if isinstance(v, bool) else v)
                      for k, v in row.items()} for row in rows)
    return out.getvalue()


def to_json(rows: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(rows), ensure_ascii=False, indent=1) + "\n"


LOCK_TYPES = (EventType.MACHINE_LOCKED, EventType.MACHINE_UNLOCKED)


def lock_reasons(db: Database) -> dict[str, dict[str, Any]]:
    """Per machine, its latest lock or unlock event (`type`, `reason`, `by`, `ts`)."""
    rows = db.query(
        "SELECT machine, type, ts, payload FROM events WHERE type IN (?, ?)"
        " ORDER BY machine, ts, seq", list(LOCK_TYPES))
    latest = {}
    for row in rows:
        event = json.loads(row["payload"])
        latest[row["machine"]] = {"type": row["type"], "reason": event.get("reason"), "by": event.get("by"),
                                  "ts": row["ts"]}
    return latest


def out_of_order_reports(db: Database, *, machine: str | None = None, since: dt.datetime | None = None,
                         limit: int | None = None) -> list[dict[str, Any]]:
    """out_of_order_reported events, newest first: machine, ts, by."""
    where, params = ["type = :type"], {"type": EventType.OUT_OF_ORDER_REPORTED}
    if machine:
        where.append("machine = :machine")
        params["machine"] = machine
    if since:
        where.append("ts >= :since")
        params["since"] = rfc3339(since)
    sql = f"SELECT machine, ts, payload FROM events WHERE {' AND '.join(where)} ORDER BY ts DESC, machine"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [{"machine": r["machine"], "ts": r["ts"], "by": json.loads(r["payload"]).get("by")}
            for r in db.query(sql, params)]
