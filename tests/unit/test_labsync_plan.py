"""The lab side's pure parts: the merge of machine-made grants, the diff and the decision."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from agent.core.model import Member
from agent.labsync.diff import diff
from agent.labsync.merge import merge
from agent.labsync.sources import Listing
from agent.labsync.sync import SyncRefused, plan

NOW = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.timezone.utc)


def row(member_id: str, badges=(), inductions=None) -> tuple[str, dict]:
    return (f"list.csv row {member_id}", {"id": member_id, "name": member_id.upper(), "status": "active",
                                          "badges": list(badges), "inductions": dict(inductions or {})})


def grant(kind: str, member_id: str, value: str, expires: str | None = None, event_id: str = "") -> dict:
    return {"kind": kind, "member_id": member_id, "value": value, "expires": expires, "by": "t",
            "machine": "laser-1", "ts": "2026-12-01T10:00:00.000Z", "event_id": event_id or f"{kind}-{value}"}


def test_labsync_merge_adds_what_the_source_lacks_and_settles_what_it_holds() -> None:
    rows = [row("m-1", ["04A1B2C3"], {"laser": "2026-06-30"}), row("m-2", ["DEADBEEF"])]
    merged = merge(rows, [
        grant("badge", "m-1", "04:a1:b2:c3", event_id="held-badge"),         # the source has it
        grant("badge", "m-1", "cafebabe", event_id="new-badge"),
        grant("badge", "m-1", "DEADBEEF", event_id="taken"),                 # m-2's in the source
        grant("induction", "m-1", "laser", "2027-06-30", event_id="renewed"),  # later than the source's
        grant("induction", "m-2", "laser", None, event_id="a"),
        grant("induction", "m-2", "laser", "2027-01-01", event_id="b"),      # the first one covers it
        grant("induction", "m-9", "cnc", event_id="nobody"),
    ])
    members = {m["id"]: m for _, m in merged.rows}
    assert members["m-1"]["badges"] == ["04A1B2C3", "CAFEBABE"]
    assert members["m-1"]["inductions"] == {"laser": "2027-06-30"}
    assert members["m-2"]["inductions"] == {"laser": None}
    assert merged.held == ["held-badge"]
    assert [g["event_id"] for g in merged.merged] == ["new-badge", "renewed", "a", "b"]
    assert [(g["event_id"], why) for g, why in merged.skipped] == [
        ("taken", "the source gives that badge to m-2"), ("nobody", "the source has no such member")]
    assert rows[0][1]["badges"] == ["04A1B2C3"]  # the source's rows are not changed


@pytest.mark.parametrize("source, granted, held", [
    (None, None, True), (None, "2027-01-01", True), ("2027-01-01", "2027-01-01", True),
    ("2027-01-01", "2026-01-01", True), ("2026-01-01", "2027-01-01", False), ("2027-01-01", None, False),
])
def test_labsync_merge_an_induction_is_held_when_the_source_covers_it(source, granted, held: bool) -> None:
    merged = merge([row("m-1", inductions={"laser": source})], [grant("induction", "m-1", "laser", granted)])
    assert bool(merged.held) is held


def member(member_id: str, **fields) -> Member:
    return Member(member_id, fields.pop("name", member_id), fields.pop("status", "active"), **fields)


def test_labsync_diff_names_members_and_fields_and_unasked_inductions() -> None:
    before = [member("m-1"), member("m-2"), member("m-3", inductions={"laser": None})]
    after = [member("m-1", name="Ada"), member("m-3", inductions={"laser": None, "lazer": None}), member("m-4")]
    changes = diff(before, after, asked={"laser", "cnc"})
    assert (changes.added, changes.removed, changes.changed) == (["m-4"], ["m-2"], {"m-1": ["name"], "m-3": ["inductions"]})
    assert changes.unasked == ["lazer"]
    assert diff(before, after).unasked is None  # no machine said what it asks for
    assert changes.lines()[-1] == "inductions no machine asks for: lazer"


def retained(version: int, generated_at: str, *ids: str) -> bytes:
    return json.dumps({"v": 1, "version": version, "generated_at": generated_at,
                       "members": [{"id": i, "name": i.upper(), "status": "active", "badges": [],
                                    "inductions": {}} for i in ids]}).encode()


def test_labsync_plan_publishes_only_when_something_changed_or_the_list_is_a_day_old() -> None:
    listing = Listing([row("m-1"), row("m-2")])
    assert plan(listing, None, None, None, NOW).why == "no list on the broker yet"
    fresh = retained(5, "2026-12-02T08:00:00.000Z", "m-1", "m-2")
    assert plan(listing, fresh, None, None, NOW).why is None
    old = retained(5, "2026-12-01T08:59:00.000Z", "m-1", "m-2")
    assert "more than a day old" in plan(listing, old, None, None, NOW).why
    assert plan(Listing([row("m-1"), row("m-2"), row("m-3")]), fresh, None, None, NOW).why == "the members changed"
    assert plan(listing, fresh, None, None, NOW).snapshot.version == int(NOW.timestamp() * 1000)


def test_labsync_plan_publishes_after_a_dismissal_made_since_the_retained_list() -> None:
    """A dismissed grant is retired on its machine only by a list generated after it."""
    listing = Listing([row("m-1"), row("m-2")])
    fresh = retained(5, "2026-12-02T08:00:00.000Z", "m-1", "m-2")
    assert "dismissed" in plan(listing, fresh, None, None, NOW, dismissed_at="2026-12-02T08:30:00.000Z").why
    assert plan(listing, fresh, None, None, NOW, dismissed_at="2026-12-02T07:30:00.000Z").why is None


def test_labsync_plan_a_retained_version_at_the_bound_is_refused_not_a_crash() -> None:
    from agent.members.version import MAX_VERSION

    with pytest.raises(SyncRefused, match=r"leaves no version up to 2\^53-1"):
        plan(Listing([row("m-1")]), retained(MAX_VERSION, "2026-12-02T08:00:00.000Z", "m-1"), None, None, NOW)


def test_labsync_plan_refuses_a_list_that_drops_too_many() -> None:
    before = retained(5, "2026-12-02T08:00:00.000Z", *[f"m-{i}" for i in range(10)])
    nine = Listing([row(f"m-{i}") for i in range(9)])
    assert plan(nine, before, None, None, NOW, max_shrink=10).why == "the members changed"
    with pytest.raises(SyncRefused, match=r"drops 2 of 10 members \(20%, more than --max-shrink 10%\)"):
        plan(Listing([row(f"m-{i}") for i in range(8)]), before, None, None, NOW, max_shrink=10)


def test_labsync_plan_a_member_that_does_not_validate_is_refused_naming_its_row() -> None:
    with pytest.raises(SyncRefused, match=r"list.csv row m-1 \(id 'm-1'\): badges: badge 'XYZ' is not hexadecimal"):
        plan(Listing([row("m-1", ["XYZ"])]), None, None, None, NOW)
