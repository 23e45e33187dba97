"""Notifications from the collector through Apprise to a local JSON endpoint (json://),
with a real Mosquitto: one message per thing technicians are told about, none for the
rest, rate-limited, and never in the way of archiving."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.link.broker import Broker
from agent.logbook.alerts import Alerts
from agent.logbook.collector import Collector
from agent.logbook.maintenance import set_interval
from agent.logbook.notify import Notifier, RateLimit, apprise_sender
from agent.logbook.retired import retire
from agent.logbook.store import open_db
from tests.support.helpers import wait_for
from tests.support.logbook import FakeMachine, events_topic, publish
from tests.support.webservers import Inbox, InboxHandler, serve

NOW = dt.datetime.now(dt.timezone.utc)


@contextmanager
def collecting(mosquitto, db_path: Path, inbox: Inbox, **alert_options) -> Iterator[Collector]:
    with serve(InboxHandler, inbox) as base:
        url = base.replace("http://", "json://") + "/fabpass"
        alerts = Alerts(Notifier(apprise_sender([url]), RateLimit(per_window=5, window_s=900)),
                        db_path, **alert_options).start()
        collector = Collector(Broker.parse(mosquitto.url), db_path, listeners=[alerts])
        with collector:
            wait_for(collector.connected.is_set, what="the collector to connect")
            yield collector
        alerts.stop()


def test_logbook_notify_one_message_each_and_none_for_the_rest(mosquitto, tmp_path: Path) -> None:
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    inbox = Inbox()
    events = [
        laser.event("machine_locked", NOW, by="giulia", reason="tube change"),
        laser.event("machine_unlocked", NOW, by="giulia", reason="done"),
        laser.refusal(NOW, "04A1B2C3", "not_inducted", member_id="m-1"),       # nothing
        cnc.event("out_of_order_reported", NOW, by="m-7"),
        cnc.event("members_rejected", NOW, version=42, error="signature does not verify"),
        cnc.event("members_rejected", NOW, version=42, error="signature does not verify"),  # the same again
        cnc.refusal(NOW, "04A1B2C4", "storage_error", member_id="m-2"),
        laser.event("machine_id_conflict", NOW, other_incarnation="f00d"),
        laser.event("machine_locked", NOW - dt.timedelta(days=3), by="old", reason="a backlog"),  # too old
    ]
    with collecting(mosquitto, tmp_path / "logbook.db", inbox) as collector:
        publish(mosquitto.url, [events_topic(e) for e in events])
        wait_for(lambda: collector.counts["stored"] == len(events), what="every event archived")
        wait_for(lambda: len(inbox.titles()) >= 6, what="six notifications")
        # A marker after everything else: once it is in, nothing more is on its way.
        publish(mosquitto.url, [events_topic(laser.event("machine_locked", NOW, by="x", reason="marker"))])
        wait_for(lambda: len(inbox.titles()) >= 7, what="the marker")
    assert inbox.titles() == [
        "laser-1 locked", "laser-1 unlocked", "cnc-1 reported out of order",
        "cnc-1 refused member list version 42", "cnc-1 cannot write its storage",
        "laser-1: two agents use this machine id", "laser-1 locked"]
    assert inbox.messages[0]["message"] == f"laser-1 was locked by giulia: tube change at {events[0]['ts']}."


def test_logbook_notify_offline_for_long_and_back_but_not_a_blip(mosquitto, tmp_path: Path) -> None:
    inbox = Inbox()
    offline = {"v": 1, "machine": "laser-1", "state": "offline"}
    with collecting(mosquitto, tmp_path / "logbook.db", inbox, offline_after_s=2.0) as collector:
        publish(mosquitto.url, [("fabpass/machines/cnc-1/status", {"v": 1, "machine": "cnc-1", "state": "offline"}),
                                ("fabpass/machines/cnc-1/status", {"v": 1, "machine": "cnc-1", "state": "idle"})])
        publish(mosquitto.url, [("fabpass/machines/laser-1/status", offline)])
        wait_for(lambda: inbox.titles() == ["laser-1 is offline"], timeout=15, what="the offline message")
        publish(mosquitto.url, [("fabpass/machines/laser-1/status", {**offline, "state": "idle"})])
        wait_for(lambda: len(inbox.titles()) == 2, what="the return")
        assert collector.counts["quarantined"] == 0
    assert inbox.titles() == ["laser-1 is offline", "laser-1 is back online"]


def test_logbook_notify_a_retired_machine_is_not_reported_offline(mosquitto, tmp_path: Path) -> None:
    db_path = tmp_path / "logbook.db"
    with open_db(db_path, create=True) as db:
        retire(db, "old-printer", NOW)
    inbox = Inbox()
    with collecting(mosquitto, db_path, inbox, offline_after_s=0.5):
        publish(mosquitto.url, [("fabpass/machines/old-printer/status",
                                 {"v": 1, "machine": "old-printer", "state": "offline"}),
                                ("fabpass/machines/laser-1/status", {"v": 1, "machine": "laser-1", "state": "offline"})])
        wait_for(lambda: inbox.titles() == ["laser-1 is offline"], timeout=15, what="laser-1 offline")
    assert inbox.titles() == ["laser-1 is offline"]


def test_logbook_notify_a_service_counter_reaching_its_limit(mosquitto, tmp_path: Path) -> None:
    db_path = tmp_path / "logbook.db"
    with open_db(db_path, create=True) as db:
        set_interval(db, "laser-1", 3600)
    laser, inbox = FakeMachine("laser-1"), Inbox()
    start = NOW - dt.timedelta(hours=3)
    with collecting(mosquitto, db_path, inbox):
        publish(mosquitto.url, [events_topic(e) for e in laser.session("m-1", "04A1B2C3", start, 40)])
        publish(mosquitto.url, [events_topic(e) for e in laser.session("m-1", "04A1B2C3", start + dt.timedelta(hours=1), 30)])
        wait_for(lambda: inbox.titles() == ["laser-1 is due for service"], what="the service message")
        publish(mosquitto.url, [events_topic(e) for e in laser.session("m-1", "04A1B2C3", start + dt.timedelta(hours=2), 5)])
        publish(mosquitto.url, [events_topic(laser.event("machine_locked", NOW, by="x", reason="marker"))])
        wait_for(lambda: len(inbox.titles()) == 2, what="the marker")
    assert inbox.titles() == ["laser-1 is due for service", "laser-1 locked"]  # told once


def test_logbook_notify_a_flapping_pi_cannot_flood_the_channel(mosquitto, tmp_path: Path) -> None:
    laser, inbox = FakeMachine("laser-1"), Inbox()
    flaps = [laser.event("machine_locked" if i % 2 == 0 else "machine_unlocked", NOW, by="pi", reason=str(i))
             for i in range(30)]
    with collecting(mosquitto, tmp_path / "logbook.db", inbox) as collector:
        publish(mosquitto.url, [events_topic(e) for e in flaps])
        wait_for(lambda: collector.counts["stored"] == 30, what="every flap archived")
        cnc = FakeMachine("cnc-1")
        publish(mosquitto.url, [events_topic(cnc.event("machine_locked", NOW, by="x", reason="marker"))])
        wait_for(lambda: "cnc-1 locked" in inbox.titles(), what="the other machine's message")
    assert inbox.titles().count("laser-1 locked") + inbox.titles().count("laser-1 unlocked") == 5


def test_logbook_notify_a_hanging_channel_never_stalls_archiving(mosquitto, tmp_path: Path) -> None:
    laser = FakeMachine("laser-1")
    release = threading.Event()
    inbox = Inbox(hang=release)
    events = [laser.event("machine_locked", NOW, by="a", reason="hangs")] + \
        [e for i in range(50) for e in laser.session(f"m-{i}", "04A1B2C3", NOW, 1)]
    try:
        with collecting(mosquitto, tmp_path / "logbook.db", inbox) as collector:
            publish(mosquitto.url, [events_topic(e) for e in events])
            wait_for(lambda: collector.counts["stored"] == len(events), what="archiving while the channel hangs")
            assert inbox.titles() == []
    finally:
        release.set()
