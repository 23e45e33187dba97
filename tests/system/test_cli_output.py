"""What fabpass prints cannot be turned against whoever reads it (issue 17, finding 6): a
member id, a badge or a reason comes from member lists and machine accounts, so a CSV
export neutralises what a spreadsheet would run as a formula, and text output shows the
control characters of data escaped; --json stays JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from agent.cli import main
from tests.support.helpers import publish, read_line
from tests.support.logbook import UTC, FakeMachine, logbook_of

NOW = dt.datetime.now(UTC).replace(microsecond=0)
FORMULAS = ["=HYPERLINK(\"http://evil\",\"Pay here\")", "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"]
ESCAPES = "m\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil"  # set the title, clear the screen, C1 CSI, RTL override


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def db_path(tmp_path):
    laser = FakeMachine("laser-1")
    events = []
    for n, member in enumerate([*FORMULAS, "m-1", ESCAPES]):
        events += laser.session(member, "04A1B2C3", NOW - dt.timedelta(hours=n + 1), 10)
    return logbook_of(tmp_path / "logbook.db", events)


def test_output_csv_export_neutralises_formulas(db_path):
    """Finding 6: cells starting with = + - @ reached the billing spreadsheet unchanged."""
    result = run("logbook", "export", "--db", db_path, "--format", "csv")
    members = {row["member_id"] for row in csv.DictReader(io.StringIO(result.output, newline=""))}
    assert {"'" + f for f in FORMULAS} | {"m-1", ESCAPES} == members
    assert all(row["duration_s"] == "600.0" for row in csv.DictReader(io.StringIO(result.output, newline=""))), \
        "numbers stay numbers"


def test_output_json_export_and_sessions_json_stay_as_they_are(db_path):
    exported = json.loads(run("logbook", "export", "--db", db_path, "--format", "json").output)
    listed = json.loads(run("logbook", "sessions", "--db", db_path, "--json").output)
    for rows in (exported, listed):
        assert {r["member_id"] for r in rows} == {*FORMULAS, "m-1", ESCAPES}


def test_output_logbook_tables_escape_control_characters(db_path):
    result = run("logbook", "sessions", "--db", db_path)
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in result.output)
    assert "m\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eevil" in result.output
    report = run("logbook", "report", "--db", db_path)
    assert "\x1b" not in report.output and "\\x1b" in report.output


def test_output_status_broker_escapes_a_member_ids_terminal_sequences(mosquitto):
    """Finding 6: `status --broker` printed a member id's escape sequences raw."""
    status = {"v": 1, "machine": "laser-1", "state": "in_use", "member_id": ESCAPES, "since": "2026-11-25T09:00:00Z"}
    publish(mosquitto.port, "fabpass/machines/laser-1/status", json.dumps(status), retain=True)
    text = run("status", "--broker", mosquitto.url)
    assert text.exit_code == 0 and "\x1b" not in text.output and "\\x1b]0;owned" in text.output
    as_json = json.loads(run("status", "--broker", mosquitto.url, "--json").output)
    assert as_json[0]["member_id"] == ESCAPES, "--json output is JSON, the data as it is"


def test_output_logs_tail_escapes_what_an_event_carries(mosquitto):
    tail = subprocess.Popen([sys.executable, "-m", "agent", "logs", "tail", "--broker", mosquitto.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "following" in read_line(tail.stderr, 15)
        event = FakeMachine("laser-1").event("access_denied", NOW, badge="0BADC0DE", reason="unknown_badge",
                                             member_id=ESCAPES)
        publish(mosquitto.port, "fabpass/machines/laser-1/events", json.dumps(event))
        line = read_line(tail.stdout, 15)
        assert "REFUSED" in line and "\x1b" not in line and "\\x1b[2J" in line
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 0
