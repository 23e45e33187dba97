"""`fabpass lock|unlock|end-session` against a real Mosquitto and a running agent: unknown
machines refused, every command timed, and the session commands aimed at the session the
machine's retained status shows."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from agent.cli import main
from tests.support.agents import ADA, GRACE, AgentProcess, config_text, members_json
from tests.support.helpers import Collector, publish, wait_for

COMMANDS = "fabpass/machines/+/commands"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def machine(tmp_path, mosquitto):
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'))
    agent = AgentProcess(config, storage).start()
    try:
        wait_for(lambda: agent.ask({"op": "status"})["broker"], 10, "the agent on the broker")
        publish(mosquitto.port, "fabpass/members", members_json(), retain=True)
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def sent(mosquitto):
    """What reaches the machines' command topics."""
    collector = Collector(mosquitto.port, COMMANDS)
    yield collector
    collector.close()


@pytest.mark.parametrize("args", [["lock", "laser-l", "--reason", "tube"], ["unlock", "laser-l"],
                                  ["end-session", "laser-l"]])
def test_cli_technician_a_machine_the_broker_does_not_know_exits_2(machine, mosquitto, sent, args):
    """Finding 6: `fabpass lock laser-l` (a typo) printed "lock sent" and exited 0."""
    done = run(*args, "--broker", mosquitto.url)
    assert done.exit_code == 2 and "no machine laser-l on this broker" in done.output, done.output
    forced = run(*args, "--broker", mosquitto.url, "--force")
    assert forced.exit_code == 0, forced.output
    wait_for(lambda: sent.messages, 10, "the forced command")
    assert [topic for topic, _, _ in sent.messages] == ["fabpass/machines/laser-l/commands"], "only the forced one"


def test_cli_technician_every_command_carries_its_time(machine, mosquitto, sent):
    assert run("lock", "laser-1", "--reason", "tube", "--broker", mosquitto.url).exit_code == 0
    wait_for(lambda: machine.ask({"op": "status"})["locked"], 10, "the lock")
    command = json.loads(wait_for(lambda: sent.messages, 10, "the command as a subscriber sees it")[0][1])
    assert command["ts"].endswith("Z") and command["machine"] == "laser-1" and "session" not in command


@pytest.mark.parametrize("args", [["end-session", "laser-1"], ["lock", "laser-1", "--reason", "fire", "--now"]])
def test_cli_technician_session_commands_name_the_session_in_progress(machine, mosquitto, sent, args):
    assert machine.ask({"op": "tap", "badge": ADA})["action"] == "started"
    since = wait_for(lambda: machine.ask({"op": "status"})["since"], 10, "the status")
    wait_for(lambda: b'"in_use"' in _retained_status(mosquitto), 10, "the retained status")
    done = run(*args, "--broker", mosquitto.url)
    assert done.exit_code == 0 and since in done.output, done.output
    wait_for(lambda: not machine.ask({"op": "status"})["relay"], 10, "the session's end")
    assert json.loads(wait_for(lambda: sent.messages, 10, "the command")[0][1])["session"] == since


@pytest.mark.parametrize("args", [["end-session", "laser-1"], ["lock", "laser-1", "--reason", "fire", "--now"]])
def test_cli_technician_no_session_to_end_exits_2_unless_forced(machine, mosquitto, sent, args):
    done = run(*args, "--broker", mosquitto.url)
    assert done.exit_code == 2 and "shows no session in progress (state idle)" in done.output, done.output
    assert run(*args, "--broker", mosquitto.url, "--force").exit_code == 0
    wait_for(lambda: sent.messages, 10, "the forced command")
    assert "session" not in json.loads(sent.messages[0][1]), "forced: whatever is in progress"


def test_cli_technician_a_session_that_ended_meanwhile_is_not_ended_for_the_next_member(machine, mosquitto,
                                                                                         monkeypatch):
    """The CLI reads Ada's session from the status; Grace's starts before the command
    arrives: the agent refuses it, and Grace's session goes on."""
    from agent.cli import technician

    events = Collector(mosquitto.port, "fabpass/machines/+/events")
    try:
        machine.ask({"op": "tap", "badge": ADA})
        wait_for(lambda: b'"in_use"' in _retained_status(mosquitto), 10, "the retained status")
        real = technician._status

        def status_then_switch(payload):
            status = real(payload)
            machine.ask({"op": "tap", "badge": ADA})  # Ada leaves...
            machine.ask({"op": "tap", "badge": GRACE})  # ...and Grace starts, as the command travels
            return status

        monkeypatch.setattr(technician, "_status", status_then_switch)
        assert run("end-session", "laser-1", "--broker", mosquitto.url).exit_code == 0
        rejected = wait_for(lambda: [e for e in events.payloads() if e["type"] == "command_rejected"], 10,
                            "the refusal")
        assert "not the one in progress" in rejected[0]["error"]
        status = machine.ask({"op": "status"})
        assert status["member_id"] == "grace" and status["relay"], "Grace's session goes on"
    finally:
        events.close()


def test_cli_technician_offline_machine_is_warned_about(machine, mosquitto):
    machine.stop()
    wait_for(lambda: b'"offline"' in _retained_status(mosquitto), 10, "the offline status")
    done = CliRunner().invoke(main, ["lock", "laser-1", "--reason", "x", "--broker", mosquitto.url])
    assert done.exit_code == 0 and "is offline" in done.stderr


def _retained_status(mosquitto) -> bytes:
    from agent.link.broker import Broker
    from agent.link.retained import read_retained

    return read_retained(Broker("127.0.0.1", mosquitto.port), "fabpass/machines/laser-1/status") or b""
