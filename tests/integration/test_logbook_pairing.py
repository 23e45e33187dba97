"""Sessions from start/end pairs, whatever order the events arrive in."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.logbook import store
from agent.logbook.pairing import pair
from agent.logbook.queries import sessions
from agent.logbook.store import NotArchivable, Outcome, ingest, open_db
from tests.support.logbook import MONDAY, FakeMachine

LATER = MONDAY + dt.timedelta(days=1)


def _sessions_of(events):
    db = open_db(":memory:", create=True)
    for event in events:
        ingest(db, event)
    return sessions(db, LATER)


def test_logbook_pairs_each_end_with_the_start_before_it():
    laser = FakeMachine("laser-1")
    events = laser.session("m-1", "04A1B2C3", MONDAY, 30) + laser.session("m-2", "04A1B2C4", MONDAY + dt.timedelta(hours=1), 45)
    rows = pair(events)
    assert [(r["member_id"], r["start_seq"], r["end_seq"], r["duration_s"]) for r in rows] == [
        ("m-1", 1, 2, 1800.0), ("m-2", 3, 4, 2700.0)]


def test_logbook_end_before_its_start_is_kept_then_matched():
    laser = FakeMachine("laser-1")
    start, end = laser.session("m-1", "04A1B2C3", MONDAY, 30)
    db = open_db(":memory:", create=True)
    ingest(db, end)
    (orphan,) = sessions(db, LATER)
    assert orphan["start"] == start["ts"] and orphan["badge"] is None  # estimated from duration_s
    ingest(db, start)
    assert sessions(db, LATER) == [{"machine": "laser-1", "member_id": "m-1", "badge": "04A1B2C3",
                                    "start": start["ts"], "end": end["ts"], "duration_s": 1800.0,
                                    "end_reason": "badge_off", "end_estimated": False, "name": None}]


def test_logbook_late_start_claims_its_end_from_the_previous_session():
    laser = FakeMachine("laser-1")
    first = laser.session("m-1", "04A1B2C3", MONDAY, 30)
    second = laser.session("m-2", "04A1B2C4", MONDAY + dt.timedelta(hours=1), 45)
    rows = _sessions_of([first[0], first[1], second[1]])  # second's start still on its way
    assert [(r["member_id"], r["badge"]) for r in rows] == [("m-1", "04A1B2C3"), ("m-2", None)]
    rows = _sessions_of([first[0], first[1], second[1], second[0]])
    assert [(r["member_id"], r["badge"], r["duration_s"]) for r in rows] == [
        ("m-1", "04A1B2C3", 1800.0), ("m-2", "04A1B2C4", 2700.0)]


def test_logbook_start_without_end_is_open_with_seconds_so_far():
    laser = FakeMachine("laser-1")
    start = laser.event("session_started", MONDAY, member_id="m-1", badge="04A1B2C3")
    db = open_db(":memory:", create=True)
    ingest(db, start)
    (row,) = sessions(db, MONDAY + dt.timedelta(minutes=10))
    assert row["end"] is None and row["end_reason"] is None and row["duration_s"] == 600.0


def test_logbook_duplicate_event_id_and_reused_seq_are_not_stored_twice():
    laser = FakeMachine("laser-1")
    start, end = laser.session("m-1", "04A1B2C3", MONDAY, 30)
    db = open_db(":memory:", create=True)
    assert [ingest(db, e).outcome for e in (start, end, end, start)] == [
        Outcome.STORED, Outcome.STORED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    with pytest.raises(NotArchivable, match="seq 2"):
        ingest(db, {**end, "event_id": "another"})  # a cloned storage: same name, another event
    with pytest.raises(NotArchivable, match="seq 3"):
        ingest(db, {**end, "seq": 3})  # a known event_id under another name
    assert db["events"].count == 2 and len(sessions(db, LATER)) == 1


def test_logbook_a_new_incarnation_counts_from_1_beside_the_old_one():
    """The same seqs under another incarnation (a new SD card) are other events."""
    laser = FakeMachine("laser-1")
    old = laser.session("m-1", "04A1B2C3", MONDAY, 30)
    laser.seq, laser.incarnation = 0, "b" * 16
    new = laser.session("m-2", "04A1B2C4", MONDAY + dt.timedelta(hours=1), 45)
    db = open_db(":memory:", create=True)
    assert [ingest(db, e).mark for e in old + new] == [1, 2, 1, 2]
    assert [(r["member_id"], r["duration_s"]) for r in sessions(db, LATER)] == [("m-1", 1800.0), ("m-2", 2700.0)]
    assert sorted((m["incarnation"], m["seq"]) for m in store.marks(db)) == [("", 2), ("b" * 16, 2)]


def test_logbook_the_mark_waits_for_a_gap_and_moves_past_a_reported_floor():
    laser = FakeMachine("laser-1")
    events = [laser.event("agent_started", MONDAY, agent_version="1") for _ in range(6)]
    db = open_db(":memory:", create=True)
    assert [ingest(db, e).mark for e in (events[1], events[0], events[3], events[4])] == [0, 2, 2, 2]
    status = {"v": 1, "machine": "laser-1", "state": "idle", "incarnation": "", "kept_from": 4}
    assert store.record_status(db, "laser-1", status) == 5, "seq 3 is gone for good: the mark passes it"
    (gap,) = db["gaps"].rows
    assert (gap["first_seq"], gap["last_seq"], gap["missing"]) == (3, 3, 1)
    assert ingest(db, events[5]).mark == 6


def _fleet_events():
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    events = []
    for i in range(4):
        at = MONDAY + dt.timedelta(hours=i)
        events += laser.session(f"m-{i}", "04A1B2C3", at, 20 + i)
        events.append(laser.refusal(at + dt.timedelta(minutes=50), "0badc0de".upper(), "unknown_badge"))
        events += cnc.session(f"m-{i + 10}", "04A1B2C5", at, 35)
    events.append(cnc.event("session_started", LATER, member_id="m-99", badge="04A1B2C6"))
    return events


FLEET = _fleet_events()
IN_SEQ_ORDER = _sessions_of(sorted(FLEET, key=lambda e: (e["machine"], e["seq"])))


@settings(max_examples=60, deadline=None)
@given(st.permutations(FLEET), st.lists(st.integers(0, len(FLEET) - 1), max_size=8))
def test_logbook_any_arrival_order_with_replays_gives_the_same_sessions(order, replays):
    assert len(IN_SEQ_ORDER) == 9
    assert _sessions_of(list(order) + [order[i] for i in replays]) == IN_SEQ_ORDER
