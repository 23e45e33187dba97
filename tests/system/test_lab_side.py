"""The lab side as it runs on the broker host: `fabpass members sync --every` and
`fabpass logbook run --notify --homeassistant` as processes, stopped with SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from agent.link.broker import Broker
from agent.link.retained import read_retained
from agent.link.topics import Topics
from agent.logbook.homeassistant import discovery
from tests.support.helpers import Collector as Subscriber
from tests.support.helpers import wait_for
from tests.support.logbook import FakeMachine, events_topic, publish, stop_cleanly
from tests.support.webservers import Inbox, InboxHandler, serve

HEADER = "id,name,badges,status,expires,roles,inductions\n"
ROWS = "".join(f"m-{i},Member {i},{0x04A10000 + i:08X},active,,,laser\n" for i in range(1, 11))


def retained_members(url: str) -> dict | None:
    payload = read_retained(Broker.parse(url), "fabpass/members")
    return json.loads(payload) if payload else None


def fabpass(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "agent", *args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, env=os.environ)


def test_lab_side_sync_every_keeps_the_last_good_list_and_tells_on_a_bad_source(mosquitto, tmp_path: Path) -> None:
    source = tmp_path / "members.csv"
    source.write_text(HEADER + ROWS)
    log = tmp_path / "sync.log"
    inbox = Inbox()
    with serve(InboxHandler, inbox) as base:
        proc = fabpass("members", "sync", "--source", str(source), "--broker", mosquitto.url, "--every", "10s",
                       "--notify", base.replace("http://", "json://") + "/sync", log=log)
        try:
            wait_for(lambda: retained_members(mosquitto.url) is not None, 20, f"the first sync ({log})")
            good = retained_members(mosquitto.url)
            source.write_text(HEADER + ROWS.splitlines(keepends=True)[0])  # 9 of 10 gone: a broken export
            wait_for(lambda: inbox.titles() == ["member list sync failed"], 30, "the notification")
            assert "drops 9 of 10 members" in inbox.messages[0]["message"]
            assert "sync failed; the last good list stays in force" in log.read_text()
            assert retained_members(mosquitto.url) == good
            source.write_text(HEADER + ROWS + "m-99,New,CAFEBABE,active,,,\n")
            wait_for(lambda: len(retained_members(mosquitto.url)["members"]) == 11, 30, "the next good list")
            assert proc.poll() is None
        finally:
            stop_cleanly(proc)


def test_lab_side_logbook_run_notifies_and_announces_to_home_assistant(mosquitto, tmp_path: Path) -> None:
    inbox = Inbox()
    log = tmp_path / "logbook.log"
    db = tmp_path / "logbook.db"
    watcher = Subscriber(mosquitto.port, "homeassistant/#")
    with serve(InboxHandler, inbox) as base:
        proc = fabpass("logbook", "run", "--broker", mosquitto.url, "--db", str(db),
                       "--notify", base.replace("http://", "json://") + "/hook", "--homeassistant", log=log)
        try:
            laser = FakeMachine("laser-1")
            event = laser.event("out_of_order_reported", dt.datetime.now(dt.timezone.utc), by="m-7")
            wait_for(lambda: "Subscribed" in log.read_text() or "connected to" in log.read_text(), 20,
                     f"the collector to connect ({log})")
            publish(mosquitto.url, [events_topic(event)])
            wait_for(lambda: inbox.titles() == ["laser-1 reported out of order"], 20, "the notification")
            assert "m-7" in inbox.messages[0]["message"]  # who reported it
            wait_for(lambda: len({t for t, p, _ in watcher.messages if p}) == 4, 20, "laser-1's four entities")
            assert {t for t, p, _ in watcher.messages if p} == {t for t, _ in discovery("laser-1", Topics("fabpass"))}
        finally:
            stop_cleanly(proc)
            watcher.close()


def test_lab_side_bad_notify_url_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "logbook", "run", "--broker", "mqtt://127.0.0.1:1",
                           "--db", str(tmp_path / "logbook.db"), "--notify", "nonsense://x"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--notify: nonsense://…: not a notification URL" in done.stderr
