"""The collector against a real Mosquitto: every event archived once, none lost while it is down."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys

from agent.link.broker import Broker
from agent.logbook.collector import Collector
from agent.logbook.queries import sessions
from agent.logbook.store import open_db
from tests.support.helpers import wait_for
from tests.support.logbook import (
    MONDAY,
    FakeMachine,
    events_topic,
    publish,
    stop_cleanly,
)

LATER = MONDAY + dt.timedelta(days=2)


def _archived(db_path) -> int:
    with open_db(db_path) as db:
        return db["events"].count


def _sessions(db_path) -> list[dict]:
    with open_db(db_path) as db:
        return sessions(db, LATER)


def test_logbook_query_waits_for_the_collector_creating_the_logbook(tmp_path, mocker):
    """SQLite refuses a switch to WAL at once while another connection writes, whatever
    its busy timeout: a query opening a logbook the collector is still creating waits."""
    path = tmp_path / "logbook.db"
    creator = sqlite3.connect(path, isolation_level=None)
    creator.execute("BEGIN IMMEDIATE")  # the collector, setting up the new file
    waits: list[float] = []

    def wait(seconds: float) -> None:  # the collector finishes while the query waits
        waits.append(seconds)
        if creator.in_transaction:
            creator.execute("COMMIT")

    mocker.patch("agent.logbook.store.time.sleep", side_effect=wait)
    try:
        with open_db(path) as db:
            assert db.journal_mode == "wal" and db["events"].count == 0
    finally:
        creator.close()
    assert len(waits) == 1


def test_logbook_sessions_from_several_machines_arrive(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    laser, cnc, printer = FakeMachine("laser-1"), FakeMachine("cnc-1"), FakeMachine("printer-2")
    events = (laser.session("m-1", "04A1B2C3", MONDAY, 30)
              + cnc.session("m-2", "04A1B2C4", MONDAY, 90, reason="timeout")
              + [printer.event("session_started", MONDAY, member_id="m-3", badge="04A1B2C5"),
                 laser.refusal(MONDAY, "04A1B2C6", "not_inducted", member_id="m-4")])
    status = {"v": 1, "machine": "printer-2", "state": "in_use", "member_id": "m-3"}
    with Collector(Broker.parse(mosquitto.url), db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish(mosquitto.url, [events_topic(e) for e in events])
        publish(mosquitto.url, [("fabpass/machines/printer-2/status", status)], retain=True)
        wait_for(lambda: collector.counts["stored"] == len(events), what="every event archived")
        with open_db(db_path) as db:
            wait_for(lambda: db["status"].count == 1, what="the fleet status")
            assert db["status"].get("printer-2")["state"] == "in_use"
    rows = _sessions(db_path)
    assert [(r["machine"], r["member_id"], r["end"] is None, r["end_reason"]) for r in rows] == [
        ("cnc-1", "m-2", False, "timeout"), ("laser-1", "m-1", False, "badge_off"),
        ("printer-2", "m-3", True, None)]


def test_logbook_replayed_and_duplicated_events_count_once(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    laser = FakeMachine("laser-1")
    events = laser.session("m-1", "04A1B2C3", MONDAY, 30) + laser.session("m-2", "04A1B2C4", MONDAY + dt.timedelta(hours=1), 15)
    with Collector(Broker.parse(mosquitto.url), db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish(mosquitto.url, [events_topic(e) for e in events + events[::-1] + events[1:2]])
        wait_for(lambda: sum(collector.counts.values()) == 9, what="all nine messages handled")
        assert collector.counts["stored"] == 4 and collector.counts["duplicate"] == 5
    assert _archived(db_path) == 4
    assert [r["duration_s"] for r in _sessions(db_path)] == [1800.0, 900.0]


def test_logbook_events_published_while_stopped_arrive_after_restart(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    laser = FakeMachine("laser-1")
    broker = Broker.parse(mosquitto.url)
    with Collector(broker, db_path) as collector:  # the first run creates the persistent session
        wait_for(collector.connected.is_set, what="the collector to connect")
    publish(mosquitto.url, [events_topic(e) for e in laser.session("m-1", "04A1B2C3", MONDAY, 42)])
    assert _archived(db_path) == 0
    with Collector(broker, db_path) as collector:
        wait_for(lambda: collector.counts["stored"] == 2, what="the queued events")
    assert [(r["member_id"], r["duration_s"]) for r in _sessions(db_path)] == [("m-1", 2520.0)]


def test_logbook_out_of_order_pairs_resolve_over_mqtt(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    cnc = FakeMachine("cnc-1")
    first = cnc.session("m-1", "04A1B2C3", MONDAY, 30)
    second = cnc.session("m-2", "04A1B2C4", MONDAY + dt.timedelta(hours=1), 60)
    with Collector(Broker.parse(mosquitto.url), db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish(mosquitto.url, [events_topic(e) for e in (second[1], first[1], second[0], first[0])])
        wait_for(lambda: collector.counts["stored"] == 4, what="all four events")
    assert [(r["member_id"], r["badge"], r["duration_s"]) for r in _sessions(db_path)] == [
        ("m-1", "04A1B2C3", 1800.0), ("m-2", "04A1B2C4", 3600.0)]


def test_logbook_malformed_events_are_quarantined_without_stopping(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    laser = FakeMachine("laser-1")
    good = laser.event("agent_started", MONDAY, agent_version="0.1.0")
    bad = [b"not json", b"[1, 2]", {**good, "seq": "seven"}, {**good, "machine": "cnc-1"},
           {**laser.event("session_ended", MONDAY, member_id="m-1", reason="badge_off")}]
    with Collector(Broker.parse(mosquitto.url), db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish(mosquitto.url, [("fabpass/machines/laser-1/events", p) for p in bad]
                + [events_topic(good)])
        wait_for(lambda: collector.counts["stored"] == 1, what="the good event after the bad ones")
        assert collector.counts["quarantined"] == len(bad)
    assert _archived(db_path) == 1
    assert [row["payload"] for row in quarantined(db_path)][:2] == ["not json", "[1, 2]"]
    assert [row["error"] for row in quarantined(db_path)][2:] == [
        "'seq' is missing or not an integer from 1 to 4611686018427387904",
        "machine 'cnc-1' does not match its topic's 'laser-1'",
        "session_ended without 'duration_s'"]


def test_logbook_run_stops_cleanly_on_sigterm(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    laser = FakeMachine("laser-1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "logbook", "run", "--broker", mosquitto.url, "--db", str(db_path),
         "--client-id", "logbook-sigterm-test"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        event = laser.event("agent_started", MONDAY, agent_version="0.1.0")

        def archived() -> bool:
            publish(mosquitto.url, [events_topic(event)])  # until its subscription is in place
            return db_path.exists() and _archived(db_path) == 1

        wait_for(archived, timeout=20, what="the collector to archive an event")
    finally:
        stop_cleanly(proc)  # asserts exit status 0 after SIGTERM
    assert proc.returncode == 0 and _archived(db_path) == 1, "the archive outlives the stop"


def test_logbook_event_not_committed_is_not_acknowledged_and_comes_back(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    laser = FakeMachine("laser-1")
    broker = Broker.parse(mosquitto.url)
    with Collector(broker, db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        # The file system went read-only under the collector (an SD card's last act): SQLite's own error.
        collector.db.execute("PRAGMA query_only = ON")
        publish(mosquitto.url, [events_topic(laser.event("agent_started", MONDAY, agent_version="1"))])
        wait_for(collector.failed.is_set, what="the collector to notice the failure")
        assert collector.counts["quarantined"] == 0, "a failing database is not the message's fault"
    with open_db(db_path) as db:
        assert db["events"].count == 0
    with Collector(broker, db_path) as collector:
        wait_for(lambda: collector.counts["stored"] == 1, what="the unacknowledged event again")


def test_logbook_an_unreachable_broker_is_one_warning_per_outage(mosquitto, tmp_path, caplog):
    """Started while its broker is down, the collector says so once (paho retries every
    few seconds), connects when the broker comes, and says it again at the next outage."""
    import logging

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "agent.logbook.collector" and r.getMessage().startswith("cannot reach broker")]

    def attempts() -> int:
        return sum(r.getMessage() == "Connection failed, retrying" for r in caplog.records)

    caplog.set_level(logging.INFO, logger="agent.logbook.collector")
    caplog.set_level(logging.DEBUG, logger="paho")
    mosquitto.stop()
    collector = Collector(Broker.parse(mosquitto.url), tmp_path / "logbook.db")
    collector._client.enable_logger(logging.getLogger("paho"))  # to count paho's attempts
    with collector:
        wait_for(lambda: attempts() >= 2, 15, "two failed connection attempts")
        assert told() == [f"cannot reach broker {collector.broker}; retrying every 30 s at most; "
                          "meanwhile events wait in the agents' outboxes or on the broker"]
        mosquitto.start()
        wait_for(collector.connected.is_set, 40, "the connection once the broker is up")
        mosquitto.stop()
        wait_for(lambda: len(told()) == 2, 40, "the second outage told")


def quarantined(db_path) -> list[dict]:
    with open_db(db_path) as db:
        return list(db.query("SELECT topic, payload, error FROM quarantine ORDER BY id"))


def test_logbook_a_reason_that_is_a_list_is_quarantined_and_the_collector_goes_on(mosquitto, tmp_path):
    """Issue scenario 1: `"reason": ["a"]` on any machine's events made the collector exit
    (sqlite3.ProgrammingError) and, never acknowledged, kill every restart too."""
    db_path = tmp_path / "logbook.db"
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    hostile = laser.event("machine_locked", MONDAY, by="mallory", reason=["a"])
    good = cnc.event("agent_started", MONDAY, agent_version="1")
    broker = Broker.parse(mosquitto.url)
    with Collector(broker, db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish(mosquitto.url, [events_topic(hostile), events_topic(good)])
        wait_for(lambda: collector.counts["stored"] == 1 or collector.failed.is_set(), what="the good event")
        assert not collector.failed.is_set()
    with Collector(broker, db_path) as collector:  # and nothing comes back to kill a restart
        wait_for(collector.connected.is_set, what="the collector to connect again")
        publish(mosquitto.url, [events_topic(cnc.event("agent_stopped", MONDAY, agent_version="1"))])
        wait_for(lambda: collector.counts["stored"] == 1 or collector.failed.is_set(), what="the next event")
        assert not collector.failed.is_set()
    (row,) = quarantined(db_path)
    assert row["topic"] == "fabpass/machines/laser-1/events" and "reason" in row["error"]
    assert json.loads(row["payload"]) == hostile


def test_logbook_a_huge_duration_does_not_stop_the_network_thread(mosquitto, tmp_path):
    """Issue scenario 1: a session_ended with no start and `"duration_s": 1e300` raised
    OverflowError in paho's network thread; the process lived on and archived nothing more."""
    db_path = tmp_path / "logbook.db"
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    hostile = laser.event("session_ended", MONDAY, member_id="m-1", duration_s=1e300, reason="badge_off")
    good = cnc.session("m-2", "04A1B2C4", MONDAY, 30)
    with Collector(Broker.parse(mosquitto.url), db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish(mosquitto.url, [events_topic(hostile)] + [events_topic(e) for e in good])
        wait_for(lambda: collector.counts["stored"] == 2, 10, "the good session after the hostile end")
    assert [(r["machine"], r["duration_s"]) for r in _sessions(db_path)] == [("cnc-1", 1800.0)]
    assert [json.loads(r["payload"]) for r in quarantined(db_path)] == [hostile]


def test_logbook_names_come_from_the_newest_member_list_on_the_broker(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    laser = FakeMachine("laser-1")

    def members(version: int, name: str) -> dict:
        return {"v": 1, "version": version, "generated_at": "2026-11-25T08:00:00Z",
                "members": [{"id": "m-1", "name": name, "badges": ["04A1B2C3"], "status": "active",
                             "expires": None, "roles": [], "inductions": {"laser": None}}]}

    publish(mosquitto.url, [("fabpass/members", members(5, "Ada Lovelace"))], retain=True)
    with Collector(Broker.parse(mosquitto.url), db_path) as collector:
        wait_for(lambda: collector.counts["member_lists"] == 1, what="the retained list")
        publish(mosquitto.url, [events_topic(e) for e in laser.session("m-1", "04A1B2C3", MONDAY, 30)])
        wait_for(lambda: collector.counts["stored"] == 2, what="the session")
        assert [r["name"] for r in _sessions(db_path)] == ["Ada Lovelace"]
        publish(mosquitto.url, [("fabpass/members", members(4, "An older list"))], retain=True)
        publish(mosquitto.url, [("fabpass/members", members(6, "Ada King"))], retain=True)
        wait_for(lambda: collector.counts["member_lists"] == 3, what="both lists")
    assert [r["name"] for r in _sessions(db_path)] == ["Ada King"]


def test_logbook_publishes_its_marks_and_asks_a_new_incarnation_for_everything(mosquitto, tmp_path):
    """`P/machines/ID/archived`, retained: every event of the incarnation up to `seq` is in the
    archive; an incarnation the logbook never heard of (its status tells) is asked to resend."""
    from tests.support.helpers import Collector as Subscriber

    marks = Subscriber(mosquitto.port, "fabpass/machines/+/archived")
    laser = FakeMachine("laser-1", incarnation="a" * 16)
    events = [laser.event("agent_started", MONDAY, agent_version="1") for _ in range(4)]
    try:
        with Collector(Broker.parse(mosquitto.url), tmp_path / "logbook.db") as collector:
            wait_for(collector.connected.is_set, what="the collector to connect")
            publish(mosquitto.url, [events_topic(e) for e in (events[0], events[1], events[3])])
            wait_for(lambda: collector.counts["stored"] == 3, what="three events")
            wait_for(lambda: marks.payloads() and marks.payloads()[-1]["seq"] == 2, what="the mark at seq 2")
            publish(mosquitto.url, [events_topic(events[2])])
            wait_for(lambda: marks.payloads()[-1]["seq"] == 4, what="the gap filled: the mark at seq 4")
            assert marks.payloads()[-1] == {"v": 1, "machine": "laser-1", "incarnation": "a" * 16, "seq": 4}
            status = {"v": 1, "machine": "laser-1", "state": "idle", "incarnation": "b" * 16, "kept_from": 1}
            publish(mosquitto.url, [("fabpass/machines/laser-1/status", status)], retain=True)
            wait_for(lambda: marks.payloads()[-1].get("resend"), what="a resend asked of the new incarnation")
            assert marks.payloads()[-1] == {"v": 1, "machine": "laser-1", "incarnation": "b" * 16, "seq": 0,
                                            "marks": {"a" * 16: 4, "b" * 16: 0}, "resend": True}
    finally:
        marks.close()
    late = Subscriber(mosquitto.port, "fabpass/machines/+/archived")  # retained for agents that connect later
    try:
        wait_for(lambda: late.payloads(), what="the retained mark")
        assert late.payloads()[-1]["marks"] == {"a" * 16: 4, "b" * 16: 0}
    finally:
        late.close()


def test_logbook_a_mark_lost_with_a_crash_is_published_again(mosquitto, tmp_path):
    """A mark due when the logbook was killed never went out: at its next connection, and
    whenever an agent sends again what the mark covers, the logbook publishes it again."""
    from tests.support.helpers import Collector as Subscriber

    db_path = tmp_path / "logbook.db"
    laser = FakeMachine("laser-1", incarnation="a" * 16)
    events = [laser.event("agent_started", MONDAY, agent_version="1") for _ in range(3)]
    broker = Broker.parse(mosquitto.url)
    with Collector(broker, db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish(mosquitto.url, [events_topic(e) for e in events])
        wait_for(lambda: collector.counts["stored"] == 3, what="three events")
    publish(mosquitto.url, [("fabpass/machines/laser-1/archived", b"")], retain=True)  # as if never sent
    marks = Subscriber(mosquitto.port, "fabpass/machines/laser-1/archived")
    try:
        with Collector(broker, db_path) as collector:  # the session is resumed: no resend asked
            wait_for(lambda: marks.payloads(), what="the mark published again at the connection")
            assert marks.payloads()[-1] == {"v": 1, "machine": "laser-1", "incarnation": "a" * 16, "seq": 3}
            count = len(marks.payloads())
            publish(mosquitto.url, [events_topic(events[1])])  # the agent has not seen it
            wait_for(lambda: len(marks.payloads()) > count, what="the mark again after a duplicate")
            assert collector.counts["duplicate"] == 1
    finally:
        marks.close()
