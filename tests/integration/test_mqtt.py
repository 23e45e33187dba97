"""The agent against a real Mosquitto: events never lost, status and will, list sync, commands."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys

import pytest

from tests.support.agents import (
    ADA,
    GRACE,
    AgentProcess,
    assert_every_seq_once,
    by_seq,
    config_text,
    members_json,
    read_events,
)
from tests.support.helpers import Collector, publish, read_line, wait_for


@pytest.fixture
def stack(tmp_path, mosquitto):
    """A broker, one simulated agent process with MQTT, and collectors; all stopped at the end."""
    opened: list = []

    class Stack:
        broker = mosquitto
        storage = tmp_path / "state"
        config = tmp_path / "laser-1.toml"

        def write_config(self, extra_mqtt: str = "", members: str = "") -> None:
            extra = f'[mqtt]\nurl = "{mosquitto.url}"\n{extra_mqtt}\n'
            if members:
                extra += f"[members]\n{members}\n"
            self.config.write_text(config_text(self.storage, extra=extra))

        def agent(self) -> AgentProcess:
            proc = AgentProcess(self.config, self.storage)
            opened.append(proc)
            return proc.start()

        def collect(self, topic: str, client_id: str = "") -> Collector:
            c = Collector(mosquitto.port, topic, client_id)
            opened.append(c)
            return c

        def events(self, collector: Collector, kind: str | None = None) -> list[dict]:
            return [e for e in collector.payloads() if kind is None or e.get("type") == kind]

    s = Stack()
    s.write_config()
    yield s
    for thing in reversed(opened):
        thing.stop() if isinstance(thing, AgentProcess) else thing.close()


def test_mqtt_published_list_applies_and_taps_become_events(stack):
    events = stack.collect("fabpass/machines/+/events")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(version=7), retain=True)
    wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 7, 10, "the list to apply")
    assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started"
    assert agent.ask({"op": "tap", "badge": ADA})["action"] == "ended"
    wait_for(lambda: len(stack.events(events, "session_ended")) == 1, 10, "the session's events")
    started = stack.events(events, "session_started")[0]
    assert (started["member_id"], started["badge"], started["machine"]) == ("ada", ADA, "laser-1")
    wait_for(lambda: agent.ask({"op": "status"})["outbox"] == 0, 10, "the outbox to drain")


def test_mqtt_broker_outage_loses_nothing(stack):
    events = stack.collect("fabpass/machines/+/events", client_id="test-collector")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(), retain=True)
    wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
    for _ in range(5):
        agent.ask({"op": "tap", "badge": ADA})
    stack.broker.stop()
    wait_for(lambda: not agent.ask({"op": "status"})["broker"], 15, "the agent to notice")
    for _ in range(20):  # taps go on from the cache while the broker is down
        assert agent.ask({"op": "tap", "badge": ADA})["granted"]
    status = agent.ask({"op": "status"})
    assert status["outbox"] >= 20
    stack.broker.start()
    last = status["last_seq"]
    wait_for(lambda: len(by_seq(stack.events(events))) == last, 30, "every event after the outage")
    assert_every_seq_once(stack.events(events), last)
    wait_for(lambda: agent.ask({"op": "status"})["outbox"] == 0, 10, "the outbox to drain")


def test_mqtt_sigkill_with_events_queued_sends_them_after_restart(stack):
    events = stack.collect("fabpass/machines/+/events")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(), retain=True)
    wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
    stack.broker.stop()
    wait_for(lambda: not agent.ask({"op": "status"})["broker"], 15, "the agent to notice")
    for _ in range(7):
        agent.ask({"op": "tap", "badge": ADA})
    queued = agent.ask({"op": "status"})
    agent.kill(signal.SIGKILL)
    stack.broker.start()
    agent.start()
    final = agent.ask({"op": "status"})
    assert final["last_seq"] > queued["last_seq"], "agent_restart and agent_started follow"
    wait_for(lambda: len(by_seq(stack.events(events))) == final["last_seq"], 30, "every event")
    assert_every_seq_once(stack.events(events), final["last_seq"])
    restart = stack.events(events, "session_ended")[-1]
    assert restart["reason"] == "agent_restart" and restart["end_estimated"] is True


def test_mqtt_status_is_retained_and_the_will_says_offline(stack):
    stack.write_config(extra_mqtt="keepalive = 2")
    agent = stack.agent()
    agent.ask({"op": "status"})
    statuses = stack.collect("fabpass/machines/laser-1/status")
    wait_for(lambda: any(s.get("state") == "idle" for s in statuses.payloads()), 10, "a retained idle status")
    first = statuses.payloads()[-1]
    assert first["machine"] == "laser-1" and first["relay"] is False and first["broker"] is True
    agent.kill(signal.SIGKILL)
    wait_for(lambda: statuses.payloads()[-1] == {"v": 1, "machine": "laser-1", "state": "offline",
                                                 "incarnation": first["incarnation"]}, 15, "the will")


def test_mqtt_hostile_member_lists_change_nothing(stack):
    events = stack.collect("fabpass/machines/+/events")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(version=5), retain=True)
    wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 5, 10, "the good list")
    good = json.loads(members_json(version=6))
    bad_member = json.loads(members_json(version=6))
    bad_member["members"][1]["badges"] = ["not-hex"]
    hostile = [
        b"{not json",
        b"[]",
        json.dumps({**good, "version": "6"}).encode(),
        json.dumps({**good, "version": 4}).encode(),  # older
        json.dumps(bad_member).encode(),
        json.dumps(good)[:200].encode(),  # truncated
        b"x" * (32 * 1024 * 1024 + 1),  # over the size limit
    ]
    # One at a time: a list still waiting when a newer one arrives is replaced by it.
    for n, payload in enumerate(hostile, 1):
        publish(stack.broker.port, "fabpass/members", payload, retain=True)
        wait_for(lambda: len(stack.events(events, "members_rejected")) == n, 20, f"rejection {n}")
    rejected = stack.events(events, "members_rejected")
    assert all(r["error"] for r in rejected)
    assert any(r.get("version") == 4 for r in rejected)
    status = agent.ask({"op": "status"})
    assert status["members_version"] == 5
    assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started", "the last good list is in force"
    publish(stack.broker.port, "fabpass/members", members_json(version=5), retain=True)  # same again
    publish(stack.broker.port, "fabpass/members", members_json(version=6), retain=True)
    wait_for(lambda: len(stack.events(events, "members_updated")) == 2, 10, "a good list after the bad")
    assert [e["version"] for e in stack.events(events, "members_updated")] == [5, 6], \
        "the same version again is a silent no-op"


def test_mqtt_commands_lock_unlock_end_session_and_reject_garbage(stack, tmp_path):
    events = stack.collect("fabpass/machines/+/events")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(), retain=True)
    wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
    url = stack.broker.url

    def fabpass(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=30)

    agent.ask({"op": "tap", "badge": ADA})
    assert fabpass("lock", "laser-1", "--reason", "tube change", "--broker", url, "--by", "tech").returncode == 0
    wait_for(lambda: agent.ask({"op": "status"})["locked"], 10, "the lock")
    status = agent.ask({"op": "status"})
    assert status["state"] == "in_use" and status["relay"], "a lock waits for the session to end"
    agent.ask({"op": "tap", "badge": ADA})
    assert agent.ask({"op": "tap", "badge": ADA})["reason"] == "machine_locked"
    assert agent.ask({"op": "tap", "badge": GRACE})["action"] == "started", "staff use a locked machine"
    assert fabpass("end-session", "laser-1", "--broker", url, "--by", "tech").returncode == 0
    wait_for(lambda: not agent.ask({"op": "status"})["relay"], 10, "the remote end")
    assert fabpass("unlock", "laser-1", "--broker", url, "--by", "tech").returncode == 0
    wait_for(lambda: not agent.ask({"op": "status"})["locked"], 10, "the unlock")
    agent.ask({"op": "tap", "badge": ADA})
    assert fabpass("lock", "laser-1", "--reason", "fire", "--now", "--broker", url).returncode == 0
    wait_for(lambda: not agent.ask({"op": "status"})["relay"], 10, "lock --now to end the session")
    for garbage in (b"{", b'{"v":1,"command":"explode","by":"x"}', b'{"v":1,"command":"lock","by":"x","reason":"' +
                    b"r" * 300 + b'"}', b"x" * 5000, b'{"v":2,"command":"unlock","by":"x"}'):
        publish(stack.broker.port, "fabpass/machines/laser-1/commands", garbage)
    wait_for(lambda: len(stack.events(events, "command_rejected")) == 5, 10, "the rejections")
    assert agent.ask({"op": "status"})["locked"], "garbage changed nothing"
    ended = stack.events(events, "session_ended")
    assert [e["reason"] for e in ended] == ["badge_off", "remote", "remote"]
    locks = stack.events(events, "machine_locked")
    assert [(e["by"], e["reason"]) for e in locks][0] == ("tech", "tube change")


def test_mqtt_a_command_sent_while_the_pi_is_off_arrives_when_it_returns(stack):
    """Within [commands] max_age (60 s by default): a later one is refused (test_security_commands.py)."""
    agent = stack.agent()
    wait_for(lambda: agent.ask({"op": "status"})["broker"], 10, "the first connection")
    agent.kill(signal.SIGTERM)
    sent = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    publish(stack.broker.port, "fabpass/machines/laser-1/commands",
            json.dumps({"v": 1, "command": "lock", "by": "tech", "reason": "while you were out", "ts": sent}))
    agent.start()
    assert wait_for(lambda: agent.ask({"op": "status"})["locked"], 15, "the queued command")


def test_mqtt_sim_tap_topic_taps_a_simulated_agent(stack):
    events = stack.collect("fabpass/machines/+/events")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(), retain=True)
    wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
    publish(stack.broker.port, "fabpass/machines/laser-1/sim/tap", "04:a1:b2:c3:d4:e5:f6")
    wait_for(lambda: agent.ask({"op": "status"})["relay"], 10, "the simulated tap")
    started = wait_for(lambda: stack.events(events, "session_started"), 10, "its event")
    assert started[0]["badge"] == ADA


def test_mqtt_fleet_status_and_logs_tail(stack):
    agent = stack.agent()
    wait_for(lambda: agent.ask({"op": "status"})["broker"], 10, "the connection")
    fleet = subprocess.run([sys.executable, "-m", "agent", "status", "--broker", stack.broker.url, "--json"],
                           capture_output=True, text=True, timeout=30)
    assert fleet.returncode == 0, fleet.stderr
    machines = json.loads(fleet.stdout)
    assert [(m["machine"], m["state"]) for m in machines] == [("laser-1", "idle")]
    tail = subprocess.Popen([sys.executable, "-m", "agent", "logs", "tail", "--broker", stack.broker.url, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "following fabpass/machines/+/events" in read_line(tail.stderr, 15)
        publish(stack.broker.port, "fabpass/members", members_json(), retain=True)
        line = json.loads(read_line(tail.stdout, 15))
        assert line["type"] == "members_updated" and line["machine"] == "laser-1"
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 0


def test_mqtt_a_clean_stop_delivers_its_own_last_events(stack):
    events = stack.collect("fabpass/machines/+/events")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(), retain=True)
    wait_for(lambda: stack.events(events, "members_updated"), 10, "the list")
    agent.ask({"op": "tap", "badge": ADA})
    assert agent.kill(signal.SIGTERM) == 0
    # The broker acknowledged them before the agent exited; the subscriber gets them soon after.
    wait_for(lambda: [e["type"] for e in stack.events(events)][-2:] == ["session_ended", "agent_stopped"], 10,
             "the shutdown's events without a restart")
    assert read_events(stack.storage) == stack.events(events), "kept until a logbook says it has them"


def test_mqtt_list_applied_in_a_child_process_leaves_taps_running(stack):
    """The updater runs as `python -m agent.members.updater`; the agent only sees the renamed file."""
    events = stack.collect("fabpass/machines/+/events")
    agent = stack.agent()
    publish(stack.broker.port, "fabpass/members", members_json(version=2), retain=True)
    wait_for(lambda: stack.events(events, "members_updated"), 10, "the list")
    members = json.loads(members_json())["members"] + [
        {"id": f"m-{i}", "name": "x", "badges": [f"{i:08X}"], "status": "active", "expires": None,
         "roles": [], "inductions": {"laser": None}} for i in range(20_000)]
    publish(stack.broker.port, "fabpass/members", members_json(version=3, members=members), retain=True)
    answers = []
    while agent.ask({"op": "status"})["members_version"] != 3:
        answers.append(agent.ask({"op": "tap", "badge": ADA})["action"])
    assert set(answers) <= {"started", "ended"}, "the old list answered every tap during the apply"
    wait_for(lambda: [e["count"] for e in stack.events(events, "members_updated")] == [4, 20_004], 20, "the event")


def test_mqtt_an_error_in_a_callback_does_not_kill_the_link(tmp_path, mosquitto, mocker):
    from agent.link import commands as remote
    from tests.support.agents import RunningAgent

    text = config_text(tmp_path, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n')
    agent = RunningAgent(text, connect=True)
    try:
        wait_for(lambda: agent.agent.link.connected, 10, "the connection")
        real, calls = remote.parse, []

        def first_one_fails(*args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("a bug")
            return real(*args, **kwargs)

        mocker.patch("agent.link.commands.parse", side_effect=first_one_fails)
        sent = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        command = json.dumps({"v": 1, "command": "lock", "by": "tech", "reason": "x", "ts": sent})
        publish(mosquitto.port, "fabpass/machines/laser-1/commands", command)  # raises in the callback
        publish(mosquitto.port, "fabpass/machines/laser-1/commands", command)
        assert wait_for(lambda: agent.agent.state.locked, 10, "the second command")
        assert len(calls) == 2 and agent.agent.link.connected
    finally:
        agent.stop()


def test_mqtt_paho_not_connected_errors_we_say_ourselves_are_dropped_a_lost_connection_is_not(caplog):
    """paho's network thread logs "not connected" once after a clean stop and after every
    failed reconnection; a technician must not read an error in the journal at every
    restart, nor every few seconds of an outage, but must read a real loss."""
    import logging

    import agent.link.agentlink  # noqa: F401 - installs the filter on paho's logger

    paho_log = logging.getLogger("paho")
    with caplog.at_level(logging.ERROR, logger="paho"):
        for state in ("MQTT_CS_DISCONNECTED", "MQTT_CS_CONNECTING", "MQTT_CS_CONNECTION_LOST"):
            paho_log.error("Client is not connected. Socket: None). Last known Connection State: %s", state)
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records] == ["MQTT_CS_CONNECTION_LOST"]


def test_mqtt_an_outage_is_one_warning_in_the_journal_not_one_per_retry(tmp_path, mosquitto, caplog):
    """While the broker is down paho retries every few seconds; the journal says so once
    per outage, in words, and again after the link has been connected in between."""
    import logging

    from tests.support.agents import RunningAgent

    def attempts() -> int:
        return sum(r.getMessage() == "Connection failed, retrying" for r in caplog.records)

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "fabpass.mqtt" and r.getMessage().startswith("cannot reach broker")]

    caplog.set_level(logging.INFO, logger="fabpass.mqtt")
    caplog.set_level(logging.DEBUG, logger="paho")  # the last call sets caplog's own level
    text = config_text(tmp_path, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n')
    agent = RunningAgent(text, connect=True)
    try:
        wait_for(lambda: agent.agent.link.connected, 10, "the connection")
        mosquitto.stop()
        wait_for(lambda: attempts() >= 2, 15, "two failed reconnections")
        assert told() == [f"cannot reach broker {agent.agent.link.broker}; retrying every 5 s at most, "
                          "events wait in the outbox"]
        assert not [r for r in caplog.records if "not connected" in r.getMessage()]
        mosquitto.start()
        wait_for(lambda: agent.agent.link.connected, 15, "the reconnection")
        mosquitto.stop()
        wait_for(lambda: len(told()) == 2, 15, "the second outage told")
    finally:
        agent.stop()


def test_mqtt_disconnect_survives_paho_thread_ending_inside_loop_stop(mosquitto, monkeypatch):
    """paho 2's network thread ends by itself after our DISCONNECT and then sets its
    `_thread` to None; if that lands between loop_stop()'s check and its join, paho
    raises AttributeError. The race is made certain here: the network thread may end
    only once loop_stop() has checked `_thread` (a gate at the end of its loop), and
    paho's module sees a `threading` whose current_thread(), called from loop_stop()
    after that check, opens the gate and waits for the thread to end."""
    import threading
    import types

    import paho.mqtt.client as paho_client

    from agent.link.broker import disconnect, make_client

    def racing(client, gate: threading.Event):
        network, me = client._thread, threading.current_thread()

        def current_thread():
            if threading.current_thread() is me and network.is_alive():
                gate.set()
                network.join(10)  # the thread ends by itself and clears client._thread
            return threading.current_thread()

        return types.SimpleNamespace(**{**vars(threading), "current_thread": current_thread})

    def connected_client() -> tuple:
        client = make_client(mosquitto.broker, "race")
        gate, forever = threading.Event(), client.loop_forever

        def loop_forever(*args, **kwargs):
            try:
                return forever(*args, **kwargs)
            finally:
                gate.wait(10)  # however fast the DISCONNECT went, the thread lives until loop_stop looks

        client.loop_forever = loop_forever
        client.connect(mosquitto.broker.host, mosquitto.broker.port)
        client.loop_start()
        wait_for(client.is_connected, what="the client to connect")
        return client, gate

    plain, gate = connected_client()
    plain.disconnect()
    with monkeypatch.context() as patch, pytest.raises(AttributeError):
        patch.setattr(paho_client, "threading", racing(plain, gate))
        plain.loop_stop()  # paho itself: the test reproduces the race

    ours, gate = connected_client()
    with monkeypatch.context() as patch:
        patch.setattr(paho_client, "threading", racing(ours, gate))
        disconnect(ours)
    assert ours._thread is None and not ours.is_connected()
