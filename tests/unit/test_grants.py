"""agent.core.grants: what a machine granted by itself, until a newer list decides."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from agent.core.grants import BadgeGrant, Grants, InductionGrant
from agent.core.model import Member

T = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)
ADA = Member(id="m-ada", name="Ada", status="active", inductions={"cnc": None, "laser": dt.date(2026, 1, 1)})


def grants() -> Grants:
    return (Grants(list_version=7)
            .with_badge(BadgeGrant("0A0045B352", "m-ada", "giulia", T))
            .with_induction(InductionGrant("m-ada", "laser", "m-tess", dt.date(2027, 12, 3), T))
            .with_induction(InductionGrant("m-bob", "laser", "m-tess", None, T + dt.timedelta(minutes=5))))


def test_grants_round_trip_through_the_json_the_agent_stores():
    original = grants()
    assert Grants.from_json(json.loads(json.dumps(original.to_json()))) == original
    assert Grants.from_json(None) == Grants() and not Grants()
    stored = original.to_json()
    assert stored["badges"] == [{"badge": "0A0045B352", "member_id": "m-ada", "by": "giulia",
                                 "ts": "2026-12-03T10:00:00.000Z"}]
    assert stored["inductions"][0] == {"member_id": "m-ada", "induction": "laser", "by": "m-tess",
                                       "expires": "2027-12-03", "ts": "2026-12-03T10:00:00.000Z"}


def test_grants_overlay_adds_the_inductions_given_here():
    g = grants()
    assert g.overlay(ADA).inductions == {"cnc": None, "laser": dt.date(2027, 12, 3)}
    assert g.overlay(ADA)._replace(inductions=ADA.inductions) == ADA
    other = Member(id="m-eve", name="Eve", status="active")
    assert g.overlay(other) is other and g.overlay(None) is None
    assert g.member_id("0A0045B352") == "m-ada" and g.member_id("0B0045B352") is None


@pytest.mark.parametrize("listed, given, result", [
    (dt.date(2028, 1, 1), dt.date(2027, 12, 3), dt.date(2028, 1, 1)),  # never shortened
    (None, dt.date(2027, 12, 3), None),
    (dt.date(2026, 1, 1), None, None),
])
def test_grants_overlay_takes_the_later_expiry(listed, given, result):
    member = ADA._replace(inductions={"laser": listed})
    g = Grants().with_induction(InductionGrant("m-ada", "laser", "m-tess", given, T))
    assert g.overlay(member).inductions["laser"] == result


def test_grants_held_against_a_list_keep_only_what_came_after_it():
    g = grants()
    assert g.held_against(7, T + dt.timedelta(days=1)) is g  # the list they were made against
    kept = g.held_against(8, T + dt.timedelta(minutes=1))
    assert list(kept.inductions) == [("m-bob", "laser")] and not kept.badges and kept.list_version == 8
    assert not g.held_against(9, T + dt.timedelta(minutes=5))  # generated at the same moment: the list decides
    assert g.held_against(8, T - dt.timedelta(seconds=1)) == g.held_against(8, T - dt.timedelta(days=1))
