"""Home Assistant MQTT discovery from the logbook, on a real Mosquitto: one device per
machine with its entities, retained, availability from the status topic, and removed
when the machine is retired."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner

from agent.cli import main
from agent.link.broker import Broker
from agent.link.topics import Topics
from agent.logbook.collector import Collector
from agent.logbook.homeassistant import HomeAssistant
from agent.logbook.store import ingest, open_db
from tests.support.helpers import Collector as Subscriber
from tests.support.helpers import wait_for
from tests.support.logbook import FakeMachine, events_topic, publish

NOW = dt.datetime.now(dt.timezone.utc)
CONFIGS = {"binary_sensor/fabpass/{m}_in_use", "sensor/fabpass/{m}_member", "binary_sensor/fabpass/{m}_locked",
           "event/fabpass/{m}_usage"}


def configs(subscriber: Subscriber, prefix: str = "homeassistant") -> dict[str, dict]:
    """The retained discovery configs the subscriber holds now (an empty payload removes one)."""
    found: dict[str, dict] = {}
    for topic, payload, _ in list(subscriber.messages):
        key = topic.removeprefix(f"{prefix}/").removesuffix("/config")
        if payload:
            found[key] = json.loads(payload)
        else:
            found.pop(key, None)
    return found


def expected(*machines: str) -> set[str]:
    return {c.format(m=m) for m in machines for c in CONFIGS}


def test_logbook_homeassistant_announces_each_machine_and_retire_removes_it(mosquitto, tmp_path: Path) -> None:
    db_path = tmp_path / "logbook.db"
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    with open_db(db_path, create=True) as db:  # seen before this run: announced when it connects
        ingest(db, laser.event("agent_started", NOW, agent_version="0.2.0"))
    ha = HomeAssistant(db_path, Topics("fabpass"))
    with Collector(Broker.parse(mosquitto.url), db_path, listeners=[ha]) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        watcher = Subscriber(mosquitto.port, "homeassistant/#")
        try:
            wait_for(lambda: set(configs(watcher)) == expected("laser-1"), what="laser-1's device")
            publish(mosquitto.url, [("fabpass/machines/cnc-1/status",
                                     {"v": 1, "machine": "cnc-1", "state": "idle", "name": "CNC router"})])
            publish(mosquitto.url, [events_topic(cnc.event("agent_started", NOW, agent_version="0.2.0"))])
            wait_for(lambda: set(configs(watcher)) == expected("laser-1", "cnc-1"), what="cnc-1's device")
            in_use = configs(watcher)["binary_sensor/fabpass/cnc-1_in_use"]
            assert in_use["device"]["identifiers"] == ["fabpass_cnc-1"]
            assert in_use["device"]["name"] == "CNC router"
            assert in_use["state_topic"] == "fabpass/machines/cnc-1/status"
            assert in_use["availability"] == [{"topic": "fabpass/machines/cnc-1/status",
                                               "value_template": "{{ 'offline' if value_json.state == 'offline' else 'online' }}"}]
            usage = configs(watcher)["event/fabpass/cnc-1_usage"]
            assert usage["state_topic"] == "fabpass/machines/cnc-1/events"
            assert {"session_started", "session_ended", "access_denied"} <= set(usage["event_types"])
        finally:
            watcher.close()
        result = CliRunner().invoke(main, ["logbook", "retire", "cnc-1", "--db", str(db_path),
                                           "--homeassistant", "--broker", mosquitto.url])
        assert result.exit_code == 0, result.output
        # A late subscriber sees only what is retained: laser-1's device, not cnc-1's.
        late = Subscriber(mosquitto.port, "homeassistant/#")
        try:
            wait_for(lambda: set(configs(late)) == expected("laser-1"), what="cnc-1's device removed")
            assert all(retain for _, _, retain in late.messages)
        finally:
            late.close()
        # Its retained status, delivered again, does not bring it back.
        publish(mosquitto.url, [("fabpass/machines/cnc-1/status", {"v": 1, "machine": "cnc-1", "state": "offline"}),
                                events_topic(laser.event("machine_locked", NOW, by="x", reason="marker"))])
        wait_for(lambda: collector.counts["stored"] == 2, what="the marker archived")
    late = Subscriber(mosquitto.port, "homeassistant/#")
    try:
        wait_for(lambda: set(configs(late)) == expected("laser-1"), what="the retained configs")
    finally:
        late.close()


def test_logbook_retire_unknown_machine_or_undo(tmp_path: Path) -> None:
    db_path = tmp_path / "logbook.db"
    with open_db(db_path, create=True) as db:
        ingest(db, FakeMachine("laser-1").event("agent_started", NOW, agent_version="0.2.0"))
    runner = CliRunner()
    result = runner.invoke(main, ["logbook", "retire", "laser-9", "--db", str(db_path)])
    assert result.exit_code == 2 and "laser-9: the logbook has never seen this machine" in result.output
    assert runner.invoke(main, ["logbook", "retire", "laser-1", "--db", str(db_path)]).exit_code == 0
    result = runner.invoke(main, ["logbook", "retire", "laser-1", "--db", str(db_path), "--undo"])
    assert result.exit_code == 0 and "back in service" in result.output
    result = runner.invoke(main, ["logbook", "retire", "laser-1", "--db", str(db_path), "--undo"])
    assert result.exit_code == 2 and "not retired" in result.output
