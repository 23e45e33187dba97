"""At the machine from the command line, against `fabpass run --simulate` processes:
`fabpass input`, `fabpass members enrol` over a real Mosquitto, `fabpass tap --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.devtools.machines import machine_toml
from tests.support.agents import AgentProcess, read_events
from tests.support.helpers import Collector, wait_for

LIST = ("id,name,badges,status,expires,roles,inductions\n"
        "tess,Tess Trainer,04AAAA01,active,,trainer:laser,laser\n"
        "alan,Alan Turing,CAFEBABE,active,,,cnc\n")


def fabpass(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60)


def machine(tmp_path: Path, **sections) -> tuple[Path, Path]:
    storage = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(machine_toml("laser-1", storage, **sections))
    members = tmp_path / "members.csv"
    members.write_text(LIST)
    return config, storage


def test_cli_input_presses_the_out_of_order_button_of_a_simulated_agent(tmp_path):
    config, storage = machine(tmp_path, report={"pin": 22, "hold": "0.3s"}, bypass={"pin": 23})
    agent = AgentProcess(config, storage).start()
    try:
        assert fabpass("members", "import", str(tmp_path / "members.csv"), "--config", str(config)).returncode == 0
        assert json.loads(fabpass("tap", "04AAAA01", "--config", str(config), "--json").stdout)["action"] == "started"
        pressed = fabpass("input", "report", "on", "--config", str(config))
        assert pressed.returncode == 0 and pressed.stdout.strip() == "report on"
        wait_for(lambda: any(e["type"] == "out_of_order_reported" for e in read_events(storage)), 10,
                 "the report, once the button has been held 0.3 s")
        status = json.loads(fabpass("status", "--config", str(config), "--json").stdout)
        assert (status["state"], status["relay"], status["locked"]) == ("locked", False, True)
        assert fabpass("input", "report", "off", "--config", str(config)).returncode == 0
        assert fabpass("input", "bypass", "on", "--config", str(config)).returncode == 0
        wait_for(lambda: json.loads(fabpass("status", "--config", str(config), "--json").stdout)["bypass"], 10,
                 "the bypass key to settle")
        text = fabpass("status", "--config", str(config)).stdout
        assert "bypass     ON" in text and "locked     yes" in text
        missing = fabpass("input", "sensor", "on", "--config", str(config))
        assert missing.returncode == 2 and "has no [sensor] pin" in missing.stderr
        wrong = fabpass("input", "door", "on", "--config", str(config))
        assert wrong.returncode == 2 and "door" in wrong.stderr
    finally:
        agent.stop()


def test_cli_input_without_an_agent_exits_1(tmp_path):
    config, _ = machine(tmp_path, report={"pin": 22})
    result = fabpass("input", "report", "on", "--config", str(config))
    assert result.returncode == 1 and "no agent is running" in result.stderr


def test_cli_members_enrol_over_the_broker_then_the_badge_is_the_members(tmp_path, mosquitto):
    config, storage = machine(tmp_path, mqtt={"url": mosquitto.url})
    agent = AgentProcess(config, storage).start()
    published = Collector(mosquitto.port, "fabpass/machines/laser-1/events")
    try:
        assert fabpass("members", "import", str(tmp_path / "members.csv"), "--config", str(config)).returncode == 0
        wait_for(lambda: json.loads(fabpass("status", "--config", str(config), "--json").stdout)["broker"], 20,
                 "the agent to reach the broker")
        sent = fabpass("members", "enrol", "alan", "--machine", "laser-1", "--broker", mosquitto.url, "--by", "giulia")
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: json.loads(fabpass("status", "--config", str(config), "--json").stdout)["enrolling"]
                 == "alan", 20, "the enrolment to open")
        answer = json.loads(fabpass("tap", "0A0045B352", "--config", str(config), "--json").stdout)
        assert answer == {"action": "enrolled", "granted": True, "reason": None, "relay": False, "member_id": "alan"}
        (enrolled,) = wait_for(lambda: [e for e in published.payloads() if e["type"] == "badge_enrolled"], 20,
                               "badge_enrolled on the broker")
        assert (enrolled["member_id"], enrolled["badge"], enrolled["by"]) == ("alan", "0A0045B352", "giulia")
        again = json.loads(fabpass("tap", "0A0045B352", "--config", str(config), "--json").stdout)
        assert (again["member_id"], again["reason"]) == ("alan", "not_inducted")
        # the trainer inducts him, and the answer says so
        assert json.loads(fabpass("tap", "04AAAA01", "--config", str(config), "--json").stdout)["action"] == "started"
        inducted = json.loads(fabpass("tap", "0A0045B352", "--config", str(config), "--json").stdout)
        assert inducted == {"action": "inducted", "granted": True, "reason": None, "relay": True, "member_id": "alan"}
    finally:
        published.close()
        agent.stop()


def test_cli_members_enrol_bad_usage_exits_2(tmp_path, mosquitto):
    empty = fabpass("members", "enrol", " ", "--machine", "laser-1", "--broker", mosquitto.url)
    assert empty.returncode == 2 and "MEMBER_ID" in empty.stderr
    machine_id = fabpass("members", "enrol", "alan", "--machine", "Laser 1", "--broker", mosquitto.url)
    assert machine_id.returncode == 2 and "MACHINE" in machine_id.stderr
