"""The agent's command line as an operator uses it: members import/check/publish,
stale lists, and a real serial reader driving a real agent on mock pins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.daemon.control import ControlError
from tests.support.agents import (
    ADA,
    GRACE,
    AgentProcess,
    FakeClock,
    RunningAgent,
    config_text,
    members_json,
    read_events,
)
from tests.support.helpers import Collector, wait_for
from tests.support.serialdevice import SerialDevice

CSV = "id,name,badges,status,expires,roles,inductions\n"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_cli_members_import_and_check_without_an_agent(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(config_text(tmp_path / "state"))
    members = tmp_path / "members.csv"
    members.write_text(CSV + f"m-1,Ada,{ADA},active,,,laser\nm-2,Alan,CAFEBABE,active,,,cnc\n")
    result = run("members", "import", str(members), "--config", str(config), "--version", "5")
    assert result.exit_code == 0 and "imported version 5: 2 members" in result.output
    check = run("members", "check", ADA.lower(), "--config", str(config), "--json")
    assert json.loads(check.output) == {"granted": True, "action": "started", "reason": None, "member_id": "m-1"}
    check = run("members", "check", "CAFEBABE", "--config", str(config), "--json")
    assert json.loads(check.output) == {"granted": False, "action": "refused", "reason": "not_inducted",
                                        "member_id": "m-2"}
    again = run("members", "import", str(members), "--config", str(config), "--version", "5")
    assert again.exit_code == 0 and "already" in again.output
    older = run("members", "import", str(members), "--config", str(config), "--version", "4")
    assert older.exit_code == 2 and "not newer" in older.output
    bad = tmp_path / "bad.csv"
    bad.write_text(CSV + f"m-1,Ada,{ADA},active,,,laser\nm-3,Bob,nothex,active,,,laser\n")
    refused = run("members", "import", str(bad), "--config", str(config), "--version", "9")
    assert refused.exit_code == 2 and "row 3" in refused.output
    check = run("members", "check", ADA, "--config", str(config), "--json")
    assert json.loads(check.output)["granted"], "the last good list stays in force"


def test_cli_members_publish_refuses_a_bad_list_and_publishes_nothing(tmp_path, mosquitto):
    retained = Collector(mosquitto.port, "fabpass/members")
    try:
        bad = tmp_path / "members.csv"
        bad.write_text(CSV + f"m-1,Ada,{ADA},active,,,laser\nm-2,Bob,{ADA},active,,,laser\n")
        result = run("members", "publish", str(bad), "--broker", mosquitto.url)
        assert result.exit_code == 2 and "row 3" in result.output
        good = tmp_path / "good.csv"
        good.write_text(CSV + f"m-1,Ada,{ADA},active,,,laser\n")
        assert run("members", "publish", str(good), "--broker", mosquitto.url, "--version", "8").exit_code == 0
        payload = wait_for(lambda: retained.payloads(), 10, "the published list")
        assert [p["version"] for p in payload] == [8], "only the good list reached the broker"
    finally:
        retained.close()


def test_cli_members_import_of_a_csv_is_generated_now_and_follows_the_cached_version(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(config_text(tmp_path / "state", extra='[members]\nmax_list_age = "1h"\n'
                                                            '[clock]\nrequire_sync = false\n'))
    members = tmp_path / "members.csv"
    members.write_text(CSV + f"m-1,Ada,{ADA},active,,,laser\n")
    versions = []
    for _ in range(2):  # twice within the same second: two versions all the same
        result = run("members", "import", str(members), "--config", str(config))
        assert result.exit_code == 0, result.output
        versions.append(int(result.output.split("version ")[1].split(":")[0]))
    assert versions[1] > versions[0] > 1_700_000_000_000, "Unix milliseconds, then the next"
    check = run("members", "check", ADA, "--config", str(config), "--json")
    assert json.loads(check.output)["granted"], "a CSV list is generated as it is imported: fresh"


def test_cli_stale_list_refuses_members_but_not_staff(tmp_path):
    clock = FakeClock()
    agent = RunningAgent(config_text(tmp_path, extra='[members]\nmax_list_age = "1h"'), clock=clock)
    try:
        agent.apply(members_json())
        assert agent.tap(ADA)["action"] == "started"
        agent.tap(ADA)
        clock.advance(2 * 3600)
        assert agent.tap(ADA)["reason"] == "stale_member_list"
        assert agent.tap(GRACE)["action"] == "started", "staff may use a machine with a stale list"
        assert agent.agent.call(agent.agent.status)["members_age_s"] == 3 * 3600  # made an hour before 09:00
    finally:
        agent.stop()


def test_cli_real_serial_reader_on_mock_pins_drives_the_relay(tmp_path):
    """Without --simulate, GPIOZERO_PIN_FACTORY=mock gives mock pins with a real reader."""
    device = SerialDevice(tmp_path / "ttyRDM")
    storage = tmp_path / "state"
    text = config_text(storage).replace('type = "simulated"', f'type = "rdm6300"\nport = "{device.path}"')
    config = tmp_path / "agent.toml"
    config.write_text(text)
    members = tmp_path / "members.json"
    tag = bytes.fromhex("0A1B2C3D4E")
    members.write_bytes(members_json(members=[{"id": "ada", "name": "Ada", "badges": [tag.hex().upper()],
                                               "status": "active", "expires": None, "roles": [],
                                               "inductions": {"laser": None}}]))
    log = tmp_path / "agent.log"
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                stdout=out, stderr=out, env=env)
    agent = AgentProcess(config, storage)
    try:
        wait_for(agent.answers, 20, "the agent")
        assert agent.ask({"op": "import", "path": str(members), "version": None})["applied"]
        checksum = 0
        for byte in tag:
            checksum ^= byte
        frame = b"\x02" + tag.hex().upper().encode() + f"{checksum:02X}".encode() + b"\x03"
        device.write(b"\xffnoise" + frame * 5)  # a card held: many frames, one tap
        wait_for(lambda: agent.ask({"op": "status"})["relay"], 10, "the relay")
        status = agent.ask({"op": "status"})
        assert status["member_id"] == "ada" and status["reader"] == {
            "type": "rdm6300", "healthy": True, "detail": None, "counters": {"dropped": 0}}
        with pytest.raises(ControlError, match="real hardware"):
            agent.ask({"op": "tap", "badge": "0A1B2C3D4E"})
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        device.close()
    started = [e for e in read_events(storage) if e["type"] == "session_started"]
    assert [e["badge"] for e in started] == ["0A1B2C3D4E"], "five frames of a held card are one tap"


def test_cli_status_says_what_the_logbook_has_confirmed_and_a_conflict(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(config_text(tmp_path / "state"))
    agent = RunningAgent(config.read_text())
    try:
        assert "no logbook has confirmed any event yet" in run("status", "--config", str(config)).output
        incarnation = agent.agent.outbox.incarnation
        agent.agent.outbox.archived(agent.agent.outbox.last_seq - 1)
        assert f"1 events not yet confirmed (incarnation {incarnation})" in run("status", "--config", str(config)).output
        agent.agent.call(agent.agent.twin_alive, "0123456789abcdef")
        shown = run("status", "--config", str(config)).output
        assert "CONFLICT" in shown and agent.agent.call(agent.agent.status)["conflict"] is True
        (conflict,) = [e for e in agent.events() if e["type"] == "machine_id_conflict"]
        assert conflict["other_incarnation"] == "0123456789abcdef"
        from agent.cli.text import event_line

        assert "CONFLICT: another agent uses this id (0123456789abcdef)" in event_line(conflict)
    finally:
        agent.stop()
