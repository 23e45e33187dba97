"""The agent wired for real: mock pins (gpiozero's MockFactory), real SQLite, the session machine."""

from __future__ import annotations

import signal
import sqlite3

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.link.commands import Command
from tests.support.agents import (
    ADA,
    ALAN,
    GRACE,
    HEDY,
    AgentProcess,
    FakeClock,
    RunningAgent,
    config_text,
    machine_files,
    members_json,
    read_events,
)
from tests.support.helpers import wait_for


def levels(pin) -> list[int]:
    """Every level a mock pin has had, starting with its unconfigured 0."""
    return [int(s.state) for s in pin.states]


def history(*driven: int) -> list[int]:
    """What `levels` shows for a pin driven to these levels: changes only, from 0."""
    out = [0]
    for level in driven:
        if level != out[-1]:
            out.append(level)
    return out


@pytest.fixture
def agents():
    started: list[RunningAgent] = []

    def start(text: str, **kwargs) -> RunningAgent:
        agent = RunningAgent(text, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def processes():
    started: list[AgentProcess] = []

    def start(config_path, storage, **kwargs) -> AgentProcess:
        proc = AgentProcess(config_path, storage, **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.mark.parametrize("active_high", [False, True])
def test_daemon_relay_pin_follows_the_session(agents, tmp_path, active_high):
    a = agents(config_text(tmp_path, active_high=active_high))
    off, on = (0, 1) if active_high else (1, 0)
    assert a.relay_pin.state == off, "relay must be off at start-up"
    a.apply(members_json())
    assert a.tap(ADA) == {"action": "started", "granted": True, "reason": None, "relay": True, "member_id": "ada"}
    assert a.relay_pin.state == on
    assert a.tap(ADA)["action"] == "ended"
    assert levels(a.relay_pin) == history(off, on, off)


def test_daemon_refusals_never_touch_the_relay(agents, tmp_path):
    a = agents(config_text(tmp_path))
    a.apply(members_json())
    answers = [a.tap(b) for b in ("11223344", ALAN, HEDY)]
    assert [x["reason"] for x in answers] == ["unknown_badge", "not_inducted", "suspended"]
    assert not any(x["relay"] for x in answers)
    assert levels(a.relay_pin) == history(1)
    denied = [e for e in a.events() if e["type"] == "access_denied"]
    assert [(e["badge"], e["reason"], e.get("member_id")) for e in denied] == [
        ("11223344", "unknown_badge", None), (ALAN, "not_inducted", "alan"), (HEDY, "suspended", "hedy")]


def test_daemon_events_have_growing_seq_and_unique_ids(agents, tmp_path):
    a = agents(config_text(tmp_path))
    a.apply(members_json())
    for badge in (ADA, ALAN, ADA):
        a.tap(badge)
    events = a.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["event_id"] for e in events}) == len(events)
    assert [e["type"] for e in events] == [
        "agent_started", "members_updated", "session_started", "access_denied", "session_ended"]
    assert all(e["machine"] == "laser-1" and e["v"] == 1 and e["ts"].endswith("Z") for e in events)


def test_daemon_staff_ends_someone_elses_session_and_others_are_refused(agents, tmp_path):
    a = agents(config_text(tmp_path))
    a.apply(members_json(members=[*members_json_members(), {
        "id": "bob", "name": "Bob", "badges": ["01020304"], "status": "active", "expires": None,
        "roles": [], "inductions": {"laser": None}}]))
    a.tap(ADA)
    assert a.tap("01020304")["reason"] == "in_use"
    assert a.relay_is_on()
    answer = a.tap(GRACE)
    assert answer["action"] == "ended" and not a.relay_is_on()
    ended = [e for e in a.events() if e["type"] == "session_ended"][-1]
    assert (ended["member_id"], ended["reason"], ended["by"]) == ("ada", "staff", "grace")


def members_json_members():
    import json

    return json.loads(members_json())["members"]


def test_daemon_max_session_warns_extends_and_times_out(agents, tmp_path):
    clock = FakeClock()
    a = agents(config_text(tmp_path, machine='max_session = "1h"\nwarn_before = "5m"'), clock=clock)
    a.apply(members_json())
    a.tap(ADA)
    clock.advance(56 * 60)  # inside the warning window
    a.tick()
    assert a.agent.state.session.warned
    assert a.tap(ADA)["action"] == "extended"
    clock.advance(59 * 60)
    a.tick()
    assert a.relay_is_on(), "extended by an hour: still on"
    clock.advance(2 * 60)
    # The relay goes off before the event is written: wait for the event.
    ended = wait_for(lambda: [e for e in a.events() if e["type"] == "session_ended"], 5, "the timeout")[-1]
    assert not a.relay_is_on()
    assert ended["reason"] == "timeout" and ended["duration_s"] == pytest.approx(117 * 60)


def test_daemon_min_off_delays_the_next_session_and_run_on_keeps_the_relay(agents, tmp_path):
    clock = FakeClock()
    a = agents(config_text(tmp_path, relay='min_off = "10s"\nrun_on = "30s"'), clock=clock)
    a.apply(members_json())
    a.tap(ADA)
    assert a.tap(ADA)["relay"] is True, "run-on keeps the relay on after the end"
    clock.advance(30)
    wait_for(lambda: not a.relay_is_on(), 5, "the end of the run-on")
    answer = a.tap(ADA)
    assert answer["action"] == "started" and answer["relay"] is False, "min_off not yet over"
    clock.advance(10)
    wait_for(a.relay_is_on, 5, "the relay after min_off")
    assert levels(a.relay_pin) == history(1, 0, 1, 0)


def test_daemon_idle_machine_ends_the_session_but_a_running_one_is_never_cut(agents, tmp_path):
    clock = FakeClock()
    text = config_text(tmp_path, machine='max_session = "1h"\nwarn_before = "1m"',
                       extra='[sensor]\npin = 27\nidle_timeout = "10m"')
    a = agents(text, clock=clock)
    sensor = a.pins.pin(27)
    a.apply(members_json())
    a.tap(ADA)
    sensor.drive_high()  # the machine starts running
    wait_for(lambda: a.agent.state.running, 5, "the sensor")
    clock.advance(3 * 3600)  # far past max_session, still running
    a.tick()
    assert a.relay_is_on(), "a running machine is not cut by max_session"
    sensor.drive_low()
    wait_for(lambda: not a.agent.state.running, 5, "the sensor")
    a.tick()
    assert not a.relay_is_on(), "past max_session and no longer running: ends"
    assert [e for e in a.events() if e["type"] == "session_ended"][-1]["reason"] == "timeout"
    a.tap(ADA)
    clock.advance(10 * 60)
    wait_for(lambda: len([e for e in a.events() if e["type"] == "session_ended"]) == 2, 5, "the idle timeout")
    assert [e for e in a.events() if e["type"] == "session_ended"][-1]["reason"] == "idle"
    assert not a.relay_is_on()


def test_daemon_full_disk_refuses_with_storage_error_then_recovers(agents, tmp_path):
    a = agents(config_text(tmp_path))
    a.apply(members_json())

    def disk_full(pages: int) -> None:
        a.agent.outbox._conn().execute(f"PRAGMA max_page_count = {pages}")

    pages = a.agent.call(lambda: a.agent.outbox._conn().execute("PRAGMA page_count").fetchone()[0])
    a.agent.call(disk_full, pages)  # SQLite's own "database or disk is full" from here on
    refused = None
    for _ in range(50):
        answer = a.tap(ADA)
        if answer["reason"] == "storage_error":
            refused = answer
            break
        a.tap(ADA)  # ended; try again until the cap bites
    assert refused == {"action": "refused", "granted": False, "reason": "storage_error", "relay": False,
                       "member_id": "ada"}
    assert not a.relay_is_on()
    a.agent.call(disk_full, 1_000_000)
    assert a.tap(ADA)["action"] == "started"
    assert a.relay_is_on()
    denied = [e for e in a.events() if e["type"] == "access_denied"]
    assert [e["reason"] for e in denied] == ["storage_error"], "the refusal is written once the disk has room"


def test_daemon_tap_from_the_command_line_is_refused_on_real_hardware(agents, tmp_path):
    a = agents(config_text(tmp_path), simulate=False)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(config_text(tmp_path))
    result = CliRunner().invoke(main, ["tap", ADA, "--config", str(cfg)])
    assert result.exit_code == 2 and "real hardware" in result.output
    assert levels(a.relay_pin) == history(1)


def test_daemon_status_and_tap_without_an_agent_exit_1(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(config_text(tmp_path))
    for args in (["status", "--config", str(cfg)], ["tap", ADA, "--config", str(cfg)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "no agent is running" in result.output


def test_daemon_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(config_text(tmp_path).replace("active_high = false", 'active_high = "no"'))
    result = CliRunner().invoke(main, ["run", "--config", str(cfg), "--simulate"])
    assert result.exit_code == 2
    assert f"{cfg}: relay.active_high: expected true or false" in result.output


def test_daemon_sigterm_ends_the_session_and_exits_0(processes, tmp_path):
    cfg, storage, members = machine_files(tmp_path)
    agent = processes(cfg, storage)
    assert agent.ask({"op": "import", "path": str(members), "version": None})["applied"]
    assert agent.ask({"op": "tap", "badge": ADA})["relay"] is True
    assert agent.kill(signal.SIGTERM) == 0
    events = read_events(tmp_path / "state")
    assert [e["type"] for e in events[-2:]] == ["session_ended", "agent_stopped"]
    assert events[-2]["reason"] == "shutdown"


def test_daemon_sigkill_mid_session_is_closed_on_restart_with_the_relay_off(processes, tmp_path):
    cfg, storage, members = machine_files(tmp_path)
    agent = processes(cfg, storage)
    agent.ask({"op": "import", "path": str(members), "version": None})
    assert agent.ask({"op": "tap", "badge": ADA})["relay"] is True
    agent.kill(signal.SIGKILL)
    agent.start()
    status = agent.ask({"op": "status"})
    assert status["relay"] is False and status["state"] == "idle"
    events = read_events(storage)
    ended = [e for e in events if e["type"] == "session_ended"]
    assert len(ended) == 1
    assert ended[0]["reason"] == "agent_restart" and ended[0]["end_estimated"] is True
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started", "a new session starts normally"


def test_daemon_lock_survives_a_restart(agents, tmp_path):
    a = agents(config_text(tmp_path))
    a.apply(members_json())
    a.agent.call(a.agent.command, Command("lock", "tech", "tube change", ts=a.agent.clock().wall))
    a.stop()
    b = agents(config_text(tmp_path))
    assert b.tap(ADA)["reason"] == "machine_locked"
    assert b.tap(GRACE)["action"] == "started", "staff may use a locked machine"
    assert b.agent.call(b.agent.status)["state"] == "in_use"


def test_daemon_corrupt_member_cache_is_set_aside(agents, tmp_path):
    a = agents(config_text(tmp_path))
    a.apply(members_json())
    a.stop()
    (tmp_path / "members.db").write_bytes(b"this is not a database" * 100)
    b = agents(config_text(tmp_path))
    assert b.tap(ADA)["reason"] == "unknown_badge"
    assert (tmp_path / "members.corrupt").exists()
    assert b.apply(members_json(version=2))["applied"]
    assert b.tap(ADA)["action"] == "started"
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(tmp_path / "members.corrupt").execute("SELECT * FROM meta").fetchall()


def test_daemon_dead_man_pin_toggles_while_healthy_and_stops_with_the_reader(agents, tmp_path):
    a = agents(config_text(tmp_path, extra="[indicators]\nheartbeat = 26"))
    beat = a.pins.pin(26)
    wait_for(lambda: len(beat.states) >= 4, 10, "the heartbeat to toggle")
    a.agent.reader._report_health(False, "unplugged")
    a.agent.call(lambda: None)  # the loop has seen it
    frozen = len(beat.states)
    a.agent.call(lambda: None)
    a.tick()
    assert len(beat.states) == frozen, "no heartbeat while the reader is dead"
    a.agent.reader._report_health(True)
    wait_for(lambda: len(beat.states) > frozen + 1, 10, "the heartbeat to resume")


def test_daemon_every_status_key_is_in_the_mqtt_reference(tmp_path, agents):
    from tests.support import ROOT

    reference = (ROOT / "docs" / "reference" / "mqtt.md").read_text().split("## Status", 1)[1].split("\n## ", 1)[0]
    a = agents(config_text(tmp_path))
    a.apply(members_json())
    status = a.agent.call(a.agent.status)
    missing = [key for key in status if f"| `{key}` |" not in reference]
    assert not missing, f"docs/reference/mqtt.md does not describe these status keys: {missing}"


def test_daemon_an_open_session_notes_a_heartbeat_at_least_every_minute_and_no_more(agents, tmp_path, mocker):
    """Each heartbeat is an SD write: one every 55 s of a session (the loop wakes every
    second), none while idle."""
    from agent.core.timespec import parse_rfc3339

    clock = FakeClock()
    a = agents(config_text(tmp_path), clock=clock)
    a.apply(members_json())
    writes = mocker.spy(a.agent.outbox, "commit")

    def run_for(seconds: int) -> None:
        for _ in range(seconds):
            clock.advance(1)
            a.tick()

    run_for(300)
    assert writes.call_count == 0, "idle: nothing to write"
    assert a.tap(ADA)["action"] == "started"
    run_for(600)
    beats = [call.args[2]["session"]["alive"] for call in writes.call_args_list]
    assert len(beats) == 1 + 600 // 55, beats
    gaps = [(parse_rfc3339(b) - parse_rfc3339(a)).total_seconds() for a, b in zip(beats, beats[1:])]
    assert max(gaps) <= 60
    assert a.tap(ADA)["action"] == "ended"
    run_for(300)
    assert writes.call_count == len(beats) + 1, "the end, then nothing more"


def test_daemon_without_a_logbook_events_are_kept_no_longer_than_keep(agents, tmp_path, caplog):
    clock = FakeClock()
    a = agents(config_text(tmp_path).replace("[storage]\n", '[storage]\nkeep = "2h"\n'), clock=clock)
    a.apply(members_json())
    a.tap(ADA)
    a.tap(ADA)
    held = a.agent.outbox.depth
    assert held >= 4 and a.agent.call(a.agent.status)["kept_from"] == 1
    clock.advance(3 * 3600)
    a.tick()
    wait_for(lambda: a.agent.outbox.depth == 0, 5, "the hourly look for old events")
    status = a.agent.call(a.agent.status)
    assert status["kept_from"] == status["last_seq"] + 1 and status["unarchived"] is None
    assert f"deleted {held} events older than" in caplog.text
