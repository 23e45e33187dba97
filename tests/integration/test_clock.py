"""A Pi without an RTC boots with a wrong date: date rules must not grant on an untrusted clock."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.core.hours import OpeningHours
from agent.core.model import Member, Reason
from agent.core.policy import Rules, Situation, decide
from agent.daemon.clock import SimulatedClock, SystemClock
from tests.support.agents import ADA, RunningAgent, config_text, members_json

NOW = dt.datetime(2026, 11, 25, 10, 0)
UNTRUSTED = Situation(clock_trusted=False)


def member(expires=None, induction_until=None, staff=False) -> Member:
    return Member(id="m", name="M", status="active", expires=expires,
                  roles=frozenset({"staff"} if staff else ()), inductions={"laser": induction_until})


@pytest.mark.parametrize("who, rules, expected", [
    (member(), Rules("laser"), None),  # no date rule applies: granted
    (member(expires=dt.date(2030, 1, 1)), Rules("laser"), Reason.CLOCK_UNSYNCHRONISED),
    (member(induction_until=dt.date(2030, 1, 1)), Rules("laser"), Reason.CLOCK_UNSYNCHRONISED),
    (member(), Rules("laser", OpeningHours.parse(["mon-sun 00:00-24:00"])), Reason.CLOCK_UNSYNCHRONISED),
    (member(staff=True), Rules("laser", OpeningHours.parse(["mon-fri 09:00-10:00"])), None),  # staff ignore hours
    (member(staff=True, expires=dt.date(2030, 1, 1)), Rules("laser"), Reason.CLOCK_UNSYNCHRONISED),
])
def test_clock_untrusted_refuses_only_where_a_date_rule_applies(who, rules, expected):
    decision = decide(who, rules, UNTRUSTED, NOW)
    assert decision.reason == expected
    assert decision.granted == (expected is None)


def test_clock_untrusted_keeps_the_precedence_of_earlier_refusals():
    suspended = Member(id="s", name="S", status="suspended", expires=dt.date(2030, 1, 1), inductions={})
    assert decide(suspended, Rules("laser"), UNTRUSTED, NOW).reason == Reason.SUSPENDED
    assert decide(None, Rules("laser"), UNTRUSTED, NOW).reason == Reason.UNKNOWN_BADGE


class Unsynchronised:
    def synchronised(self) -> bool:
        return False


def test_clock_daemon_refuses_a_member_with_an_expiry_until_the_clock_is_synchronised(tmp_path):
    agent = RunningAgent(config_text(tmp_path))
    agent.agent.clock_status = Unsynchronised()
    try:
        members = [{"id": "ada", "name": "Ada", "badges": [ADA], "status": "active", "expires": "2030-01-01",
                    "roles": [], "inductions": {"laser": None}}]
        agent.apply(members_json(members=members))
        answer = agent.tap(ADA)
        assert answer["reason"] == "clock_unsynchronised" and not agent.relay_is_on()
        agent.agent.clock_status = SimulatedClock()
        assert agent.tap(ADA)["action"] == "started"
    finally:
        agent.stop()


def test_clock_system_clock_answers_a_boolean():
    assert isinstance(SystemClock().synchronised(), bool)
