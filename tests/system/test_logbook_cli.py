"""The logbook's query, export, maintenance and privacy commands, through click's CliRunner."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zoneinfo

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.cli.logbook import logbook
from agent.core.timespec import rfc3339
from agent.logbook import queries, store
from agent.logbook.names import record_names
from agent.logbook.store import ingest, open_db
from tests.support import ROOT
from tests.support.logbook import UTC, FakeMachine, logbook_of

NOW = dt.datetime.now(UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def open_hours() -> float:
    """Hours so far of the fixture's open session (started 20 minutes before NOW)."""
    return (20 * 60 + (dt.datetime.now(UTC) - NOW).total_seconds()) / 3600


@pytest.fixture
def db_path(tmp_path):
    """laser-1: m-1 10 days ago (60 min), m-2 3 days ago (30 min), m-1 2 h ago (15 min);
    cnc-1: m-2 3 days ago (120 min, timeout), m-3 open since 20 min; two refusals."""
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    events = (laser.session("m-1", "04A1B2C3", NOW - 10 * DAY, 60)
              + laser.session("m-2", "04A1B2C4", NOW - 3 * DAY, 30)
              + laser.session("m-1", "04A1B2C3", NOW - 2 * HOUR, 15)
              + cnc.session("m-2", "04A1B2C4", NOW - 3 * DAY, 120, reason="timeout")
              + [cnc.event("session_started", NOW - dt.timedelta(minutes=20), member_id="m-3", badge="04A1B2C5"),
                 laser.refusal(NOW - 2 * DAY, "04A1B2C5", "not_inducted", member_id="m-3"),
                 cnc.refusal(NOW - 12 * DAY, "0BADBADB", "unknown_badge")])
    return logbook_of(tmp_path / "logbook.db", events)


def invoke(*args: str):
    return CliRunner().invoke(main, ["logbook", *args], catch_exceptions=False)


def sessions_json(db_path, *args: str) -> list[dict]:
    result = invoke("sessions", "--db", str(db_path), "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_logbook_sessions_json_has_exactly_the_contract_keys(db_path):
    rows = sessions_json(db_path)
    assert len(rows) == 5
    assert all(list(r) == ["machine", "member_id", "badge", "start", "end", "duration_s", "end_reason",
                           "end_estimated", "name"] for r in rows)
    assert {(r["end_estimated"], r["name"]) for r in rows} == {(False, None)}, "no crash, no member list seen"
    (open_row,) = [r for r in rows if r["end"] is None]
    assert open_row["member_id"] == "m-3" and open_row["end_reason"] is None
    assert open_row["duration_s"] / 3600 == pytest.approx(open_hours(), abs=0.01)


@pytest.mark.parametrize("args, expected", [
    (["--machine", "laser-1"], [("laser-1", "m-1"), ("laser-1", "m-2"), ("laser-1", "m-1")]),
    (["--member", "m-2"], [("cnc-1", "m-2"), ("laser-1", "m-2")]),
    (["--since", "7d"], [("cnc-1", "m-2"), ("laser-1", "m-2"), ("laser-1", "m-1"), ("cnc-1", "m-3")]),
    (["--since", "7d", "--until", "1d", "--machine", "laser-1"], [("laser-1", "m-2")]),
    (["--since", rfc3339(NOW - 2 * HOUR + dt.timedelta(minutes=5)), "--machine", "laser-1"],
     [("laser-1", "m-1")]),  # overlaps: started before, still running then
    (["--until", (NOW - 9 * DAY).date().isoformat(), "--member", "m-3"], []),
])
def test_logbook_sessions_filters(db_path, args, expected):
    assert [(r["machine"], r["member_id"]) for r in sessions_json(db_path, *args)] == expected


def test_logbook_sessions_table_shows_open_sessions(db_path):
    result = invoke("sessions", "--db", str(db_path), "--machine", "cnc-1")
    lines = result.output.splitlines()
    assert lines[0].split() == ["MACHINE", "MEMBER", "NAME", "BADGE", "START", "END", "H:MM", "ENDED"]
    assert "2:00" in lines[1] and "timeout" in lines[1]
    assert "m-3" in lines[2] and "(open)" in lines[2]


@pytest.mark.parametrize("command", [
    ["sessions", "--since", "last tuesday"], ["sessions", "--until", "2026-13-40"],
    ["report", "--since", "7 days"], ["export", "--format", "csv", "--since", "yesterday"],
    ["service", "laser-1", "--at", "noon"], ["service", "laser-1", "--every", "often"],
])
def test_logbook_bad_time_arguments_exit_2(db_path, command):
    result = CliRunner().invoke(main, ["logbook", *command, "--db", str(db_path)])
    assert result.exit_code == 2
    assert command[-2] in result.output and "not" in result.output


def test_logbook_missing_database_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["logbook", "sessions", "--db", str(tmp_path / "typo.db")])
    assert result.exit_code == 2 and "typo.db" in result.output
    assert not (tmp_path / "typo.db").exists()


def test_logbook_report_hours_refusals_and_busiest_hours(db_path):
    result = invoke("report", "--db", str(db_path), "--since", "7d", "--json")
    report = json.loads(result.output)
    assert report["machines"][0] == {"machine": "cnc-1", "hours": pytest.approx(2 + open_hours(), abs=0.01),
                                     "sessions": 2, "estimated_hours": 0.0}
    assert report["machines"][1] == {"machine": "laser-1", "hours": 0.75, "sessions": 2, "estimated_hours": 0.0}
    assert {m["member_id"]: m["hours"] for m in report["members"]} == {
        "m-2": 2.5, "m-3": pytest.approx(open_hours(), abs=0.01), "m-1": 0.25}
    assert report["refusals"] == [{"machine": "laser-1", "reason": "not_inducted", "count": 1}]
    assert sum(b["hours"] for b in report["busiest_hours"]) == pytest.approx(2.75 + open_hours(), abs=0.02)
    text = invoke("report", "--db", str(db_path)).output
    assert "unknown_badge" in text and "Busiest hours" in text


def test_logbook_busiest_hours_split_at_hour_boundaries(tmp_path):
    laser = FakeMachine("laser-1")
    monday = dt.datetime(2026, 11, 23, tzinfo=UTC)
    with open_db(tmp_path / "l.db", create=True) as db:
        for event in (laser.session("m-1", "04A1B2C3", monday.replace(hour=14, minute=30), 90)
                      + laser.session("m-2", "04A1B2C4", monday.replace(hour=15, minute=45), 15)):
            ingest(db, event)
        busiest = queries.report(db, monday + DAY, UTC)["busiest_hours"]
    assert busiest == [{"hour": 15, "hours": 1.25}, {"hour": 14, "hours": 0.5}]


def test_logbook_export_csv_and_json_by_start(db_path):
    result = invoke("export", "--db", str(db_path), "--format", "csv", "--since", "7d", "--until", "1d")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == list(queries.SESSION_KEYS)
    assert [(r["machine"], r["member_id"], r["duration_s"]) for r in rows] == [
        ("cnc-1", "m-2", "7200.0"), ("laser-1", "m-2", "1800.0")]
    every = json.loads(invoke("export", "--db", str(db_path), "--format", "json").output)
    closed = [r for r in sessions_json(db_path) if r["end"]]
    assert len(every) == 5 and [r for r in every if r["end"]] == closed


def test_logbook_service_counters_and_due_flag(db_path, tmp_path):
    base = ["--db", str(db_path), "--json"]
    counter = json.loads(invoke("service", "laser-1", *base, "--every", "1h").output)
    assert counter == {"machine": "laser-1", "last_service": None, "last_note": None,
                       "hours_since_service": 1.75, "every_hours": 1.0, "due": True}
    counter = json.loads(invoke("service", "laser-1", *base, "--note", "tube replaced",
                                "--at", rfc3339(NOW - 4 * DAY)).output)
    assert (counter["hours_since_service"], counter["last_note"], counter["due"]) == (0.75, "tube replaced", False)
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text('[service_every]\nlaser-1 = "30m"\ncnc-1 = "2h"\n')
    report = json.loads(invoke("report", "--db", str(db_path), "--thresholds", str(thresholds), "--json").output)
    assert {m["machine"]: m["due"] for m in report["maintenance"]} == {"cnc-1": True, "laser-1": True}
    thresholds.write_text('[service_every]\nlaser-1 = "lots"\n')
    result = CliRunner().invoke(main, ["logbook", "report", "--db", str(db_path), "--thresholds", str(thresholds)])
    assert result.exit_code == 2 and "service_every.laser-1" in result.output


def _all(db_path, table: str) -> list[dict]:
    with open_db(db_path) as db:
        return list(db[table].rows)


def _aged(tmp_path):
    """Events 8 months old, 5 months old and a day old; an open session from 7 months ago."""
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    events = (laser.session("m-1", "04A1B2C3", NOW - 240 * DAY, 60)
              + [laser.refusal(NOW - 240 * DAY, "04A1B2C4", "suspended", member_id="m-2"),
                 cnc.event("session_started", NOW - 210 * DAY, member_id="m-3", badge="04A1B2C5")]
              + laser.session("m-1", "04A1B2C3", NOW - 150 * DAY, 30)
              + laser.session("m-2", "04A1B2C4", NOW - DAY, 45))
    return logbook_of(tmp_path / "aged.db", events)


def test_logbook_retention_deletes_only_what_is_older(tmp_path):
    path = _aged(tmp_path)
    result = invoke("retention", "--db", str(path), "--months", "6", "--json")
    assert json.loads(result.output)["events"] == 3 and json.loads(result.output)["sessions"] == 1
    assert sorted((r["machine"], r["seq"]) for r in _all(path, "events")) == [
        ("cnc-1", 1), ("laser-1", 4), ("laser-1", 5), ("laser-1", 6), ("laser-1", 7)]
    assert [(r["machine"], r["member_id"], r["end"] is None) for r in sessions_json(path)] == [
        ("cnc-1", "m-3", True), ("laser-1", "m-1", False), ("laser-1", "m-2", False)]


def test_logbook_retention_pseudonymises_with_a_keyed_hash(tmp_path):
    path = _aged(tmp_path)
    key = tmp_path / "pseudonym.key"
    key.write_text("a-secret-of-more-than-16-bytes\n")
    result = invoke("retention", "--db", str(path), "--months", "6", "--pseudonymise", "--key-file", str(key), "--json")
    assert json.loads(result.output)["sessions"] == 1
    rows = sessions_json(path)
    assert len(rows) == 4 and rows[0]["member_id"].startswith("anon-") and rows[0]["badge"].startswith("anon-")
    assert [r["member_id"] for r in rows[1:]] == ["m-3", "m-1", "m-2"]
    assert not any("m-1" in r["payload"] or "04A1B2C3" in r["payload"]
                   for r in _all(path, "events") if r["ts"] < rfc3339(NOW - 200 * DAY) and r["machine"] == "laser-1")
    again = invoke("retention", "--db", str(path), "--months", "6", "--pseudonymise", "--key-file", str(key), "--json")
    assert json.loads(again.output)["events"] == 0  # idempotent: pseudonyms are not hashed again
    assert CliRunner().invoke(main, ["logbook", "retention", "--db", str(path), "--months", "6",
                                     "--pseudonymise"]).exit_code == 2


def test_logbook_member_export_holds_only_that_members_data(db_path):
    export = json.loads(invoke("member-export", "m-3", "--db", str(db_path)).output)
    assert export["member_id"] == "m-3"
    assert [(s["machine"], s["end"]) for s in export["sessions"]] == [("cnc-1", None)]
    assert export["refusals"] == [{"machine": "laser-1", "ts": rfc3339(NOW - 2 * DAY),
                                   "badge": "04A1B2C5", "reason": "not_inducted"}]
    assert {e.get("member_id") for e in export["events"]} == {"m-3"}


def test_logbook_every_command_has_help_and_is_documented():
    docs = (ROOT / "docs" / "logbook.md").read_text()
    for name, command in logbook.commands.items():
        assert command.help, name
        assert f"fabpass logbook {name}" in docs, name


def test_logbook_busiest_hours_keep_every_second_across_a_dst_change(tmp_path):
    rome = zoneinfo.ZoneInfo("Europe/Rome")  # 2026-10-25: 03:00 CEST becomes 02:00 CET
    laser = FakeMachine("laser-1")
    with open_db(tmp_path / "l.db", create=True) as db:
        for event in laser.session("m-1", "04A1B2C3", dt.datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 150):
            ingest(db, event)
        busiest = queries.report(db, dt.datetime(2026, 10, 26, tzinfo=UTC), rome)["busiest_hours"]
    assert sorted((b["hour"], b["hours"]) for b in busiest) == [(1, 0.5), (2, 2.0)]  # 02:xx twice


@pytest.mark.parametrize("command", [
    ["sessions", "--since", "99999999d"], ["sessions", "--until", "9999-12-31T23:59:59-12:00"],
    ["report", "--since", "0001-01-01T00:00:00+14:00"], ["export", "--format", "csv", "--until", "99999999999w"],
])
def test_logbook_times_out_of_range_exit_2(db_path, command):
    """Issue scenario 7: a time the calendar cannot hold was a traceback (OverflowError)."""
    result = CliRunner().invoke(main, ["logbook", *command, "--db", str(db_path)])
    assert result.exit_code == 2, result.output
    assert command[-2] in result.output and "out of range" in result.output


def test_logbook_future_dated_sessions_never_break_a_query(tmp_path):
    """Issue scenario 7: a Pi whose clock runs ahead; its sessions are archived like any other."""
    laser = FakeMachine("laser-1")
    path = tmp_path / "future.db"
    with open_db(path, create=True) as db:
        for event in (laser.session("m-1", "04A1B2C3", NOW + 9 * DAY, 30)
                      + laser.session("m-2", "04A1B2C4", NOW - DAY, 30)
                      + laser.session("m-3", "04A1B2C5", NOW + 400 * 7 * DAY, 60)):
            ingest(db, event)
        weeks = queries.weekly_hours(db, NOW, UTC, 12)
    assert len(weeks) == 12 and sum(sum(w.values()) for w in weeks.values()) == 0.5
    assert len(sessions_json(path)) == 3
    report = json.loads(invoke("report", "--db", str(path), "--json").output)
    assert [(m["machine"], m["hours"], m["sessions"]) for m in report["machines"]] == [("laser-1", 2.0, 3)]


def test_logbook_estimated_ends_and_names_in_sessions_export_and_report(tmp_path):
    """Issue scenario 5: a session a power cut ended (at the agent's last heartbeat) says so
    in sessions, in the billing export (true/false in CSV) and in the report's hours."""
    laser = FakeMachine("laser-1", incarnation="0123456789abcdef")
    start = NOW - 3 * HOUR
    events = [laser.event("session_started", start, member_id="m-1", badge="04A1B2C3"),
              laser.event("session_ended", start + dt.timedelta(minutes=45), member_id="m-1",
                          duration_s=2700.0, reason="agent_restart", end_estimated=True)]
    events += laser.session("m-2", "04A1B2C4", NOW - HOUR, 30)
    path = tmp_path / "logbook.db"
    with open_db(path, create=True) as db:
        for event in events:
            ingest(db, event)
        record_names(db, json.dumps({"v": 1, "version": 7, "members": [{"id": "m-1", "name": "Ada Lovelace"}]}).encode())
    rows = sessions_json(path)
    assert [(r["member_id"], r["name"], r["end_estimated"]) for r in rows] == [
        ("m-1", "Ada Lovelace", True), ("m-2", None, False)]
    exported = list(csv.DictReader(io.StringIO(invoke("export", "--db", str(path), "--format", "csv").output)))
    assert [(r["name"], r["end_estimated"]) for r in exported] == [("Ada Lovelace", "true"), ("", "false")]
    report = json.loads(invoke("report", "--db", str(path), "--json").output)
    assert (report["hours"], report["estimated_hours"]) == (1.25, 0.75)
    assert report["machines"] == [{"machine": "laser-1", "hours": 1.25, "sessions": 2, "estimated_hours": 0.75}]
    text = invoke("report", "--db", str(path)).output
    assert "0.75 h of them estimated" in text
    table = invoke("sessions", "--db", str(path)).output
    assert "Ada Lovelace" in table and "(estimated)" in table


def test_logbook_quarantine_lists_what_could_not_be_archived(tmp_path):
    path = tmp_path / "logbook.db"
    with open_db(path, create=True) as db:
        store.quarantine(db, "fabpass/machines/laser-1/events", b'{"reason": ["a"]}',
                         "machine_locked: 'reason' must be a string of at most 1000 characters")
        store.quarantine(db, "fabpass/machines/laser-1/events", b"\xff" + b"x" * 70_000, "event is not JSON")
    rows = json.loads(invoke("quarantine", "--db", str(path), "--json").output)
    assert [list(r) for r in rows] == [["topic", "payload", "error", "received"]] * 2
    assert rows[0]["payload"] == '{"reason": ["a"]}' and rows[1]["payload"].startswith("\\xffxxx")
    assert "payload cut to 65536 of 70004 characters" in rows[1]["error"]
    assert [r["error"] for r in json.loads(invoke("quarantine", "--db", str(path), "--json", "--limit", "1").output)
            ] == [rows[1]["error"]]
    assert "must be a string" in invoke("quarantine", "--db", str(path)).output
