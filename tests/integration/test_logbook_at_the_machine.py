"""The logbook archives and reports what happens at the machine: inductions per trainer,
out-of-order reports and bypass time per machine (real SQLite; the CLI's report; and
real agents publishing to a real Mosquitto and `fabpass logbook run`)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.logbook import queries
from agent.logbook.store import open_db
from tests.support.agents import AgentProcess, config_text
from tests.support.helpers import publish, wait_for
from tests.support.logbook import UTC, FakeMachine, logbook_of

T = dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
H = dt.timedelta(hours=1)


@pytest.fixture
def db_path(tmp_path):
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    events = [
        laser.event("induction_granted", T, member_id="alan", induction="laser", by="tess", expires=None),
        laser.event("induction_granted", T + H, member_id="bob", induction="laser", by="tess", expires="2027-12-01"),
        cnc.event("induction_granted", T + H, member_id="ada", induction="cnc", by="tess", expires=None),
        cnc.event("induction_granted", T - 30 * 24 * H, member_id="eve", induction="cnc", by="rob", expires=None),
        laser.event("out_of_order_reported", T + 2 * H, by="alan"),
        laser.event("out_of_order_reported", T + 5 * H, by=None),
        cnc.event("out_of_order_reported", T + 3 * H, by="ada"),
        laser.event("bypass_on", T - 2 * H),      # on before the period: counted from its start
        laser.event("bypass_off", T + H),
        laser.event("bypass_on", T + 4 * H),
        laser.event("bypass_on", T + 4.5 * H),    # again, after a restart: the same span
        laser.event("bypass_off", T + 6 * H),
        cnc.event("bypass_on", T + 22 * H),       # still on now
    ]
    return logbook_of(tmp_path / "logbook.db", events)


def test_logbook_report_inductions_out_of_order_and_bypass(db_path):
    now = T + 23 * H
    with open_db(db_path) as db:
        report = queries.report(db, now, UTC, since=T)
    assert report["inductions"] == [{"trainer": "tess", "induction": "laser", "count": 2},
                                    {"trainer": "tess", "induction": "cnc", "count": 1}]
    assert report["out_of_order"] == [{"machine": "laser-1", "count": 2, "last": "2026-12-01T14:00:00.000Z"},
                                      {"machine": "cnc-1", "count": 1, "last": "2026-12-01T12:00:00.000Z"}]
    assert report["bypass"] == [{"machine": "laser-1", "hours": 3.0, "times": 2},
                                {"machine": "cnc-1", "hours": 1.0, "times": 1}]
    with open_db(db_path) as db:
        assert queries.bypass_time(db, now, since=T + 5 * H, until=T + 7 * H) == [
            {"machine": "laser-1", "hours": 1.0, "times": 1}]
        everything = queries.report(db, now, UTC)
    assert {(i["trainer"], i["induction"]): i["count"] for i in everything["inductions"]}[("rob", "cnc")] == 1
    assert everything["bypass"][0] == {"machine": "laser-1", "hours": 5.0, "times": 2}


def test_logbook_report_command_shows_them(db_path):
    result = CliRunner().invoke(main, ["logbook", "report", "--db", str(db_path), "--json"])
    assert result.exit_code == 0
    assert {"inductions", "out_of_order", "bypass"} <= json.loads(result.output).keys()
    text = CliRunner().invoke(main, ["logbook", "report", "--db", str(db_path)]).output
    assert "Inductions given at the machines, per trainer:" in text and "tess" in text
    assert "Out-of-order reports:" in text and "Bypass key" in text


def test_logbook_archives_what_real_agents_report_at_the_machine(tmp_path, mosquitto):
    db = tmp_path / "logbook.db"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(tmp_path / "state", extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'
                                                           '[report]\npin = 22\nhold = "0.2s"\n[bypass]\npin = 23\n'))
    agent = AgentProcess(config, tmp_path / "state")
    members = {"v": 1, "version": 1, "generated_at": None, "members": [
        {"id": "tess", "name": "Tess", "badges": ["04AAAA01"], "status": "active", "roles": ["trainer:laser"],
         "inductions": {"laser": None}},
        {"id": "alan", "name": "Alan", "badges": ["CAFEBABE"], "status": "active", "inductions": {}}]}
    with open(tmp_path / "logbook.log", "wb") as log:
        logbook = subprocess.Popen([sys.executable, "-m", "agent", "logbook", "run", "--broker", mosquitto.url,
                                    "--db", str(db)], stdout=log, stderr=log)
    try:
        agent.start()
        publish(mosquitto.port, "fabpass/members", json.dumps(members), retain=True)
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
        assert agent.ask({"op": "tap", "badge": "04AAAA01"})["action"] == "started"
        assert agent.ask({"op": "tap", "badge": "CAFEBABE"})["action"] == "inducted"
        agent.ask({"op": "input", "name": "bypass", "on": True})
        agent.ask({"op": "input", "name": "report", "on": True})
        wait_for(lambda: agent.ask({"op": "status"})["locked"], 10, "the report to lock the machine")

        def report() -> dict:
            result = subprocess.run([sys.executable, "-m", "agent", "logbook", "report", "--db", str(db), "--json"],
                                    capture_output=True, text=True, timeout=30)
            return json.loads(result.stdout) if result.returncode == 0 else {}

        done = wait_for(lambda: (r := report()) and r["out_of_order"] and r["bypass"] and r, 20, "the archive")
        assert done["inductions"] == [{"trainer": "tess", "induction": "laser", "count": 1}]
        assert [(o["machine"], o["count"]) for o in done["out_of_order"]] == [("laser-1", 1)]
        assert [(b["machine"], b["times"]) for b in done["bypass"]] == [("laser-1", 1)]
    finally:
        agent.stop()
        logbook.terminate()
        logbook.wait(10)
