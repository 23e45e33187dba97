"""What the collector accepts from MQTT (agent.logbook.events) and the marks it publishes
(agent.logbook.marks): pure code, property-tested against arbitrary JSON."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.logbook.events import (
    FIELDS,
    MAX_DURATION_S,
    MalformedEvent,
    parse_event,
    parse_names,
    parse_status,
)
from agent.logbook.marks import MarkBook
from agent.logbook.pairing import pair

GOOD = {"v": 1, "event_id": "e-1", "seq": 3, "incarnation": "0123456789abcdef", "type": "session_ended",
        "machine": "laser-1", "ts": "2026-11-25T09:00:00+01:00", "member_id": "m-1", "duration_s": 60.5,
        "reason": "badge_off", "end_estimated": True}


def parse(event: object) -> dict:
    return parse_event(json.dumps(event, allow_nan=True).encode(), "laser-1")


def test_logbook_events_a_good_event_is_normalised():
    event = parse(GOOD)
    assert event["ts"] == "2026-11-25T08:00:00.000Z" and event["incarnation"] == "0123456789abcdef"
    assert parse({k: v for k, v in GOOD.items() if k != "incarnation"})["incarnation"] == "", \
        "an agent of an earlier version: the empty incarnation"


@pytest.mark.parametrize("key, value, says", [
    ("reason", ["a"], "'reason' must be a reason"),
    ("duration_s", 1e300, "'duration_s' must be a number of seconds from 0"),
    ("duration_s", float("nan"), "NaN is not a JSON number"),
    ("duration_s", -1, "'duration_s'"),
    ("duration_s", True, "'duration_s'"),
    ("member_id", "", "'member_id' must be a non-empty string"),
    ("member_id", "m" * 1001, "'member_id'"),
    ("end_estimated", "yes", "'end_estimated' must be true or false"),
    ("seq", 2**63, "'seq'"),
    ("seq", 0, "'seq'"),
    ("seq", 1.0, "'seq'"),
    ("incarnation", "a/b", "'incarnation'"),
    ("incarnation", "x" * 65, "'incarnation'"),
    ("ts", "0001-01-01T00:00:00+14:00", "'ts'"),
    ("ts", "9999-12-31T23:59:59-12:00", "'ts'"),
    ("ts", "2026-11-25T09:00:00", "'ts'"),
    ("ts", "1969-12-31T23:59:59Z", "outside 1970 to 8999"),
    ("machine", "cnc-1", "does not match its topic"),
    ("type", "Session Ended", "'type'"),
    ("v", True, "unsupported version"),
    ("event_id", "", "'event_id'"),
    ("member_id", "\ud800", "can't encode"),
])
def test_logbook_events_every_field_is_checked(key, value, says):
    with pytest.raises(MalformedEvent, match=says.replace("(", r"\(")):
        parse({**GOOD, key: value})


VALID = {  # the fields of a good event of each type
    "session_started": {"member_id": "m-1", "badge": "04A1B2C3"},
    "session_extended": {"member_id": "m-1", "badge": "04A1B2C3"},
    "session_ended": {"member_id": "m-1", "duration_s": 60.0, "reason": "badge_off"},
    "access_denied": {"badge": "04A1B2C3", "reason": "unknown_badge"},
    "machine_locked": {"by": "tech", "reason": "tube"}, "machine_unlocked": {"by": "tech"},
    "command_rejected": {"error": "bad"}, "members_updated": {"version": 3, "count": 10},
    "members_rejected": {"error": "bad"}, "agent_started": {"agent_version": "1"},
    "agent_stopped": {"agent_version": "1"}, "machine_id_conflict": {"other_incarnation": "abc"},
}
COMMON = {k: GOOD[k] for k in ("v", "event_id", "seq", "incarnation", "machine", "ts")}


def test_logbook_events_every_required_field_is_required():
    assert set(VALID) == set(FIELDS)
    for kind, fields in FIELDS.items():
        assert parse({**COMMON, "type": kind, **VALID[kind]})["type"] == kind
        for key, (_, required, _) in fields.items():
            if required:
                with pytest.raises(MalformedEvent, match=f"{kind} without '{key}'"):
                    parse({**COMMON, "type": kind, **{k: v for k, v in VALID[kind].items() if k != key}})


def test_logbook_events_an_unknown_type_is_archived_but_its_indexed_fields_are_checked():
    newer = {**GOOD, "type": "out_of_order_reported", "by": ["x"]}
    del newer["duration_s"]
    assert parse(newer)["by"] == ["x"], "a newer agent's event is archived as it is"
    with pytest.raises(MalformedEvent, match="'reason'"):
        parse({**newer, "reason": {"a": 1}})


def test_logbook_events_size_nesting_and_encoding_are_refused():
    with pytest.raises(MalformedEvent, match="more than 65536"):
        parse_event(b" " * 70_000, "laser-1")
    with pytest.raises(MalformedEvent, match="nested too deeply"):
        parse_event(b"[" * 20_000 + b"]" * 20_000, "laser-1")
    with pytest.raises(MalformedEvent, match="not JSON"):
        parse_event(b"\xff\xfe", "laser-1")
    with pytest.raises(MalformedEvent, match="not JSON"):
        parse_event(b"1" * 5000, "laser-1")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(sorted({*GOOD, "badge", "by", "type", "extra"})), JSON, max_size=4),
       kind=st.sampled_from(sorted(FIELDS) + ["future_event"]))
def test_logbook_events_any_json_is_an_archivable_event_or_a_malformed_one(changes, kind):
    """Whatever arrives, parse_event raises MalformedEvent or returns an event whose indexed
    columns SQLite can store, whose ts sorts, and whose session pairs without overflow."""
    try:
        event = parse({**GOOD, "type": kind, **changes})
    except MalformedEvent:
        return
    for key in ("member_id", "badge", "reason"):
        assert event.get(key) is None or isinstance(event[key], str)
    assert type(event["seq"]) is int and 1 <= event["seq"] < 2**63
    json.dumps(event, ensure_ascii=False).encode("utf-8")
    if event["type"] == "session_ended":
        assert math.isfinite(event["duration_s"]) and 0 <= event["duration_s"] <= MAX_DURATION_S
        (row,) = pair([event])
        assert row["start"] <= event["ts"]


def test_logbook_events_status_and_member_names():
    status = parse_status(b'{"v":1,"machine":"laser-1","state":"idle","incarnation":"ab","kept_from":5}', "laser-1")
    assert status["kept_from"] == 5
    for bad in (b'{"machine":"laser-1","state":"idle","kept_from":0}', b'{"machine":"laser-1","state":""}',
                b'{"machine":"cnc-1","state":"idle"}', b'{"machine":"laser-1","state":"idle","incarnation":7}'):
        with pytest.raises(MalformedEvent):
            parse_status(bad, "laser-1")
    assert parse_names(b'{"version":3,"members":[{"id":"m-1","name":"Ada","badges":[]}]}', 1000) == (
        3, {"m-1": "Ada"})
    with pytest.raises(MalformedEvent, match="member 1"):
        parse_names(b'{"version":3,"members":[{"id":"m-1","name":null}]}', 1000)
    with pytest.raises(MalformedEvent, match="more than 10"):
        parse_names(b'{"version":3,"members":[]}', 10)


NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc).timestamp()


def test_logbook_marks_one_message_per_machine_with_every_recent_incarnation():
    book = MarkBook(keep_s=30 * 86400)
    book.set("laser-1", "old", 40, NOW - 40 * 86400)
    book.set("laser-1", "aa", 7, NOW - 60)
    book.set("laser-1", "bb", 3, NOW)
    book.set("cnc-1", "cc", 9, NOW, resend=True)
    assert book.take_due(NOW) == [
        ("cnc-1", {"v": 1, "machine": "cnc-1", "incarnation": "cc", "seq": 9, "resend": True}),
        ("laser-1", {"v": 1, "machine": "laser-1", "incarnation": "bb", "seq": 3, "marks": {"aa": 7, "bb": 3}})]
    assert book.take_due(NOW) == [], "nothing new: nothing due"
    book.set("laser-1", "bb", 3, NOW)
    assert book.take_due(NOW) == [], "the same mark again is not news"
    book.nudge("laser-1")
    assert [(m, p.get("resend")) for m, p in book.take_due(NOW)] == [("laser-1", None)], "sent again, as it was"
    book.all_due(resend=True)
    assert [(m, p.get("resend")) for m, p in book.take_due(NOW)] == [("cnc-1", True), ("laser-1", True)]


def test_logbook_events_member_names_a_member_without_a_name_is_not_a_malformed_list():
    """A list's `name` is optional (the agents take a member without one): the logbook must
    not quarantine the whole list, and so lose every name, for one."""
    assert parse_names(b'{"version":3,"members":[{"id":"m-1"},{"id":"m-2","name":"Ada"}]}', 1000) == (
        3, {"m-1": None, "m-2": "Ada"})
