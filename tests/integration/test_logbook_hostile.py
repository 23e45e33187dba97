"""A running collector over a real Mosquitto under a flood of hostile messages: it never
stops or stalls, quarantines what it cannot archive, and a good event still lands."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

from agent.link.broker import Broker, disconnect, make_client
from agent.logbook import queries
from agent.logbook.collector import Collector
from agent.logbook.store import open_db
from agent.logbook.web import render_page
from tests.support.helpers import wait_for
from tests.support.logbook import MONDAY, UTC, FakeMachine, events_topic, publish

HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**70, -(2**70), 1e300, -1e300, 0.5, "", "x" * 5000, "\u0000", "\ud800",
    "9999-99-99T99:99:99Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "2026-11-23T09:00:00",
    [], {}, ["a"], {"a": 1}, [[[[[]]]]], "DROP TABLE events", "fabpass/#", "m-1\n", "<script>",
]
TYPES = ["session_started", "session_ended", "session_extended", "access_denied", "machine_locked",
         "machine_unlocked", "command_rejected", "members_updated", "members_rejected", "agent_started",
         "agent_stopped", "machine_id_conflict", "some_future_type"]


def _valid(machine: FakeMachine, kind: str) -> dict[str, Any]:
    fields = {
        "session_started": {"member_id": "m-1", "badge": "04A1B2C3"},
        "session_extended": {"member_id": "m-1", "badge": "04A1B2C3"},
        "session_ended": {"member_id": "m-1", "duration_s": 60.0, "reason": "badge_off"},
        "access_denied": {"badge": "04A1B2C3", "member_id": None, "reason": "unknown_badge"},
        "machine_locked": {"by": "tech", "reason": "tube"}, "machine_unlocked": {"by": "tech", "reason": ""},
        "command_rejected": {"error": "bad"}, "members_updated": {"version": 3, "count": 10},
        "members_rejected": {"version": 4, "error": "bad"}, "agent_started": {"agent_version": "1"},
        "agent_stopped": {"agent_version": "1"}, "machine_id_conflict": {"other_incarnation": "abc"},
    }.get(kind, {"anything": 1})
    return machine.event(kind, MONDAY, **fields)


def hostile_payloads(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs: valid events with one field made hostile or removed, extra
    fields, garbage bytes, JSON that is not an object, nesting too deep, hostile
    statuses and member lists, and replays of one event under other names."""
    machine = FakeMachine("laser-1", incarnation="0123456789abcdef")
    out: list[tuple[str, bytes]] = []
    events_topic_ = "fabpass/machines/laser-1/events"
    while len(out) < count:
        roll = rng.random()
        event = _valid(machine, rng.choice(TYPES))
        if roll < 0.55:
            key = rng.choice(sorted(event))
            event[key] = rng.choice(HOSTILE_VALUES)
            out.append((events_topic_, json.dumps(event, allow_nan=True).encode()))
        elif roll < 0.65:
            del event[rng.choice(sorted(event))]
            out.append((events_topic_, json.dumps(event).encode()))
        elif roll < 0.7:
            event[rng.choice(["member_id", "badge", "reason", "by", "x"])] = rng.choice(HOSTILE_VALUES)
            event["nan"] = float("nan")
            out.append((events_topic_, json.dumps(event, allow_nan=True).encode()))
        elif roll < 0.75:
            out.append((events_topic_, rng.randbytes(rng.randint(0, 300))))
        elif roll < 0.78:
            out.append((events_topic_, b"[" * 5000 + b"]" * 5000))
        elif roll < 0.8:
            out.append((events_topic_, json.dumps(rng.choice(HOSTILE_VALUES)).encode()))
        elif roll < 0.85:
            out.append((events_topic_, json.dumps(event).encode()[: rng.randint(1, 80)]))
        elif roll < 0.92:
            status = {"v": 1, "machine": "laser-1", "state": "idle", "incarnation": "0123456789abcdef",
                      "kept_from": 1}
            status[rng.choice(sorted(status))] = rng.choice(HOSTILE_VALUES)
            out.append(("fabpass/machines/laser-1/status", json.dumps(status, allow_nan=True).encode()))
        elif roll < 0.95:
            members = {"v": 1, "version": 5, "members": [{"id": "m-1", "name": "Ada"}]}
            members[rng.choice(["version", "members"])] = rng.choice(HOSTILE_VALUES)
            out.append(("fabpass/members", json.dumps(members, allow_nan=True).encode()))
        else:  # an event seen before, under another event_id, seq or machine
            again = _valid(machine, "agent_started")
            out.append((events_topic_, json.dumps(again).encode()))
            out.append((events_topic_, json.dumps({**again, "event_id": "another"}).encode()))
            out.append((events_topic_, json.dumps({**again, "seq": again["seq"] + 10**6}).encode()))
    return out


def publish_all(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = make_client(Broker.parse(url))
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", Broker.parse(url).port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        disconnect(client)


def test_logbook_fuzz_thousands_of_hostile_messages_then_a_good_event_lands(mosquitto, tmp_path):
    db_path = tmp_path / "logbook.db"
    flood = hostile_payloads(random.Random(16), 3000)
    good = FakeMachine("cnc-1", incarnation="fedcba9876543210").session("m-2", "04A1B2C4", MONDAY, 30)
    with Collector(Broker.parse(mosquitto.url), db_path) as collector:
        wait_for(collector.connected.is_set, what="the collector to connect")
        publish_all(mosquitto.url, flood)
        publish(mosquitto.url, [events_topic(e) for e in good])

        wait_for(lambda: collector.failed.is_set() or sum(collector.counts.values()) == len(flood) + len(good),
                 120, "every message handled")
        assert not collector.failed.is_set()
        assert collector.counts["quarantined"] > len(flood) // 2
    with open_db(db_path) as db:
        assert [(r["machine"], r["duration_s"]) for r in queries.sessions(db, MONDAY, machine="cnc-1")] == [
            ("cnc-1", 1800.0)]
        internal = [r for r in queries.quarantined(db) if r["error"].startswith("cannot be archived")]
        assert not internal, f"a hostile message got past the checks: {internal[:3]}"
        # Whatever was archived can be queried, reported and shown.
        now = dt.datetime(2026, 12, 1, tzinfo=UTC)
        queries.sessions(db, now)
        queries.report(db, now, UTC)
        assert render_page(db, {}, now, UTC)[0] == 200
