"""The archive end to end: real agents, a real Mosquitto, the real collector. Every event
each incarnation of each machine makes reaches the logbook exactly once, whatever
happens to the SD card, the broker, the logbook or the machine ids (issue scenarios 2 to 6)."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.link.broker import Broker
from agent.logbook.collector import Collector
from agent.logbook.store import open_db
from tests.support.agents import (
    ADA,
    GRACE,
    AgentProcess,
    RunningAgent,
    config_text,
    machine_files,
    read_events,
)
from tests.support.helpers import wait_for


@pytest.fixture
def running():
    """Everything a test starts (agents, collectors) is stopped at the end, newest first."""
    things: list = []
    yield things
    for thing in reversed(things):
        thing.stop()


def agent_text(storage: Path, url: str, machine_id: str = "laser-1", mqtt: str = "") -> str:
    return config_text(storage, machine_id=machine_id, extra=f'[mqtt]\nurl = "{url}"\n{mqtt}')


def start_agent(running: list, storage: Path, url: str, **kwargs) -> RunningAgent:
    agent = RunningAgent(agent_text(storage, url, **kwargs), connect=True)
    running.append(agent)
    from tests.support.agents import members_json

    assert agent.apply(members_json())["applied"]
    return agent


def start_collector(running: list, url: str, db: Path) -> Collector:
    collector = Collector(Broker.parse(url), db)
    running.append(collector)
    collector.start()
    wait_for(collector.connected.is_set, 10, "the collector to connect")
    return collector


def archived(db: Path) -> list[tuple]:
    """(machine, incarnation, seq) of every archived event, once per row; the incarnation
    is '' where the logbook does not know incarnations."""
    if not db.exists():
        return []
    with open_db(db) as logbook:
        columns = {c.name for c in logbook["events"].columns}
        incarnation = "incarnation" if "incarnation" in columns else "''"
        return logbook.execute(f"SELECT machine, {incarnation}, seq FROM events").fetchall()


def archived_types(db: Path) -> list[tuple[str, int]]:
    """(type, count) of the archived session events, by type."""
    with open_db(db) as logbook:
        return logbook.execute("SELECT type, count(*) FROM events WHERE type LIKE 'session_%' "
                               "GROUP BY type ORDER BY type").fetchall()


def made(storage: Path, machine: str = "laser-1") -> set[tuple]:
    """(machine, incarnation, seq) of every event the agent on `storage` has made: seq 1 to
    its outbox's last_seq (events leave the outbox once delivered, the counter stays)."""
    conn = sqlite3.connect(storage / "agent.db")
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()
    incarnation = json.loads(meta.get("incarnation", '""'))
    return {(machine, incarnation, seq) for seq in range(1, json.loads(meta["last_seq"]) + 1)}


def exactly(db: Path, expected: set[tuple]) -> bool:
    """The archive holds every expected event, once, and nothing else."""
    rows = archived(db)
    return len(rows) == len(set(rows)) and set(rows) == expected


def sessions(agent: RunningAgent, count: int, badge: str = ADA) -> None:
    for _ in range(count):
        assert agent.tap(badge)["action"] == "started"
        assert agent.tap(badge)["action"] == "ended"


def status(agent: RunningAgent) -> dict:
    return agent.agent.call(agent.agent.status)


def test_archive_a_wiped_sd_card_is_a_new_incarnation_whose_events_all_land(mosquitto, tmp_path, running, caplog):
    """Scenario 2: after a wipe the agent starts seq again at 1; the logbook archived
    none of the new events (they looked like replays of the old ones)."""
    db, storage = tmp_path / "logbook.db", tmp_path / "state"
    start_collector(running, mosquitto.url, db)
    first = start_agent(running, storage, mosquitto.url)
    sessions(first, 3)
    first.stop()
    before = made(storage)
    wait_for(lambda: exactly(db, before), 20, "the first card's events in the archive")
    shutil.rmtree(storage)  # a new SD card
    second = start_agent(running, storage, mosquitto.url)
    sessions(second, 20)
    second.stop()
    after = made(storage)
    assert not before & after, "a new card is a new incarnation"
    wait_for(lambda: exactly(db, before | after), 30, "the new card's events in the archive")
    (noted,) = [r for r in caplog.records if "a new incarnation" in r.getMessage()]
    assert noted.name == "agent.logbook.collector" and noted.levelname == "WARNING"


def test_archive_a_broker_restarted_without_persistence_loses_nothing(mosquitto, tmp_path, running):
    """Scenario 3: the broker acknowledged the events, then forgot them (and the logbook's
    queue) in a restart without persistence while the logbook was away."""
    db, storage = tmp_path / "logbook.db", tmp_path / "state"
    collector = start_collector(running, mosquitto.url, db)  # its persistent session exists
    collector.stop()
    agent = start_agent(running, storage, mosquitto.url)
    sessions(agent, 6)
    wait_for(lambda: status(agent)["outbox"] == 0, 15, "the broker to acknowledge every event")
    mosquitto.restart(forget=True)
    start_collector(running, mosquitto.url, db)
    wait_for(lambda: exactly(db, made(storage)), 30, "every event in the archive after the restart")
    assert archived_types(db) == [("session_ended", 6), ("session_started", 6)]
    with open_db(db) as logbook:  # all six sessions, paired: what a technician bills
        assert logbook["sessions"].count == 6


def test_archive_a_logbook_started_after_the_machines_gets_their_earlier_events(mosquitto, tmp_path, running):
    """Scenario 3, second half: nobody was subscribed when the events were published."""
    db, storage = tmp_path / "logbook.db", tmp_path / "state"
    agent = start_agent(running, storage, mosquitto.url)
    sessions(agent, 4)
    wait_for(lambda: status(agent)["outbox"] == 0, 15, "the broker to acknowledge every event")
    start_collector(running, mosquitto.url, db)
    wait_for(lambda: exactly(db, made(storage)), 30, "the earlier events in the archive")
    assert archived_types(db) == [("session_ended", 4), ("session_started", 4)]
    with open_db(db) as logbook:
        assert logbook["sessions"].count == 4


def test_archive_two_agents_sharing_a_machine_id_both_land_and_each_knows(mosquitto, tmp_path, running, caplog):
    """Scenario 4: a copied agent.toml. Both agents used client id fabpass-ID and threw each
    other off the broker every second; the logbook kept half of the sessions."""
    db = tmp_path / "logbook.db"
    start_collector(running, mosquitto.url, db)
    one = start_agent(running, tmp_path / "one", mosquitto.url)
    two = start_agent(running, tmp_path / "two", mosquitto.url)
    for agent in (one, two):
        wait_for(lambda agent=agent: status(agent)["broker"], 15, "the agent to connect")
    sessions(one, 5)
    sessions(two, 5, GRACE)
    for agent in (one, two):
        wait_for(lambda agent=agent: status(agent).get("conflict") is True, 60, "the conflict to be noticed")
    wait_for(lambda: exactly(db, made(tmp_path / "one") | made(tmp_path / "two")), 30,
             "both agents' events in the archive")
    one_incarnation, two_incarnation = status(one)["incarnation"], status(two)["incarnation"]
    assert one_incarnation != two_incarnation
    for agent, other in ((one, two_incarnation), (two, one_incarnation)):
        conflicts = [e for e in agent.events() if e["type"] == "machine_id_conflict"]
        assert conflicts and conflicts[0]["other_incarnation"] == other
    assert not [r for r in caplog.records if "disconnected from" in r.getMessage()], "the agents did not fight"
    assert any("machine id" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    two.stop()  # its offline status ends the conflict
    wait_for(lambda: status(one)["conflict"] is False, 15, "the conflict to end")


def test_archive_a_session_open_at_a_power_cut_ends_at_its_last_heartbeat(tmp_path):
    """Scenario 5: kill -9 during a session and restart 60 h later; the session was billed
    for 60 hours. It ends at the last heartbeat (at most 60 s before the cut)."""
    from tests.integration.test_reliability_daemon_property import _vanish
    from tests.support.agents import FakeClock, members_json

    clock, storage = FakeClock(), tmp_path / "state"
    agent = RunningAgent(config_text(storage), clock=clock)
    agent.apply(members_json())
    crashed = False
    try:
        assert agent.tap(ADA)["action"] == "started"
        for _ in range(125):  # two minutes and five seconds of a running loop
            clock.advance(1)
            agent.tick()
        agent.agent._shutdown = lambda: _vanish(agent.agent)  # the power cut
        agent.stop()
        crashed = True
    finally:
        if not crashed:
            agent.stop()
    clock.advance(60 * 3600)
    again = RunningAgent(config_text(storage), clock=clock)
    try:
        (ended,) = [e for e in again.events() if e["type"] == "session_ended"]
    finally:
        again.stop()
    assert ended["reason"] == "agent_restart" and ended["end_estimated"] is True
    assert 125 - 60 <= ended["duration_s"] <= 125, ended


def test_archive_a_second_run_on_the_same_storage_exits_1_and_disturbs_nothing(tmp_path):
    """Scenario 6: the second `fabpass run` closed the first one's session and deleted its
    control socket, while the first kept its relay on."""
    config, storage, members = machine_files(tmp_path)
    first = AgentProcess(config, storage).start()
    try:
        first.ask({"op": "import", "path": str(members), "version": None})
        assert first.ask({"op": "tap", "badge": ADA})["relay"] is True
        second = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config), "--simulate"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = second.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            second.kill()
            second.communicate()
            pytest.fail("a second agent on the same storage kept running")
        assert second.returncode == 1 and str(storage) in stderr, stderr
        now = first.ask({"op": "status"})
        assert now["state"] == "in_use" and now["relay"] is True and now["member_id"] == "ada"
        assert [e["type"] for e in read_events(storage)].count("session_ended") == 0
        assert first.ask({"op": "tap", "badge": ADA})["action"] == "ended"
    finally:
        first.kill(signal.SIGTERM) if first.proc else None


def test_archive_status_says_how_much_the_logbook_has_not_confirmed(mosquitto, tmp_path, running):
    db, storage = tmp_path / "logbook.db", tmp_path / "state"
    agent = start_agent(running, storage, mosquitto.url)
    sessions(agent, 2)
    assert status(agent)["unarchived"] is None, "no logbook has ever confirmed anything"
    start_collector(running, mosquitto.url, db)
    wait_for(lambda: status(agent)["unarchived"] == 0, 30, "the logbook to confirm everything")
    now = status(agent)
    assert now["kept_from"] == now["last_seq"] + 1 and now["outbox"] == 0


def test_archive_a_mark_that_stays_behind_gets_the_events_again_less_and_less_often(mosquitto, tmp_path, running):
    """A logbook that said it had seq 2 and then nothing more: after resend_after the agent
    sends seq 3 onwards again, and waits twice as long before the next time."""
    from tests.support.helpers import Collector as Subscriber
    from tests.support.helpers import publish

    storage = tmp_path / "state"
    wire = Subscriber(mosquitto.port, "fabpass/machines/laser-1/events")
    running.append(type("Closer", (), {"stop": lambda self: wire.close()})())
    agent = start_agent(running, storage, mosquitto.url, mqtt='resend_after = "2s"\n')
    incarnation = status(agent)["incarnation"]
    publish(mosquitto.port, "fabpass/machines/laser-1/archived",
            json.dumps({"v": 1, "machine": "laser-1", "incarnation": incarnation, "seq": 2}), retain=True)
    wait_for(lambda: agent.agent.outbox.mark == 2, 10, "the mark")
    sessions(agent, 1)

    def sent(seq: int) -> list[float]:
        return [t for t, e in wire.timed() if e["seq"] == seq]

    wait_for(lambda: len(sent(3)) >= 3, 30, "seq 3 sent three times")
    first, second, third = sent(3)[:3]
    assert second - first >= 1.9 and third - second >= 3.8, (first, second, third)
    assert len(sent(1)) == len(sent(2)) == 1, "what the mark covers is never sent again"
