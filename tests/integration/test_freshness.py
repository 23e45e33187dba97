"""How fresh a member list is: counted from its `generated_at` (which a signature covers),
never from when it was delivered, so a list replayed or delivered again stays as old as it
is; a lab that republishes (`fabpass members refresh`) keeps its machines fresh."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from agent.core.timespec import rfc3339
from tests.support.agents import (
    ADA,
    GRACE,
    AgentProcess,
    FakeClock,
    RunningAgent,
    config_text,
    members_json,
)
from tests.support.helpers import publish, wait_for

HOUR = 3600


def ago(seconds: float, now: dt.datetime | None = None) -> str:
    return rfc3339((now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(seconds=seconds))


def test_freshness_counts_from_generated_at_not_from_delivery(tmp_path):
    clock = FakeClock()
    agent = RunningAgent(config_text(tmp_path, extra='[members]\nmax_list_age = "1h"'), clock=clock)
    try:
        agent.apply(members_json(generated_at=ago(2 * HOUR, clock.wall)))  # delivered now, made 2 h ago
        assert agent.tap(ADA)["reason"] == "stale_member_list"
        assert agent.tap(GRACE)["action"] == "started", "staff may use a machine with a stale list"
        assert agent.agent.call(agent.agent.status)["members_age_s"] == 2 * HOUR
    finally:
        agent.stop()


def test_freshness_a_list_made_now_ages_with_the_clock(tmp_path):
    clock = FakeClock()
    agent = RunningAgent(config_text(tmp_path, extra='[members]\nmax_list_age = "1h"'), clock=clock)
    try:
        agent.apply(members_json(generated_at=rfc3339(clock.wall)))
        assert agent.tap(ADA)["action"] == "started"
        agent.tap(ADA)
        clock.advance(HOUR + 1)
        assert agent.tap(ADA)["reason"] == "stale_member_list"
        agent.apply(members_json(version=2, generated_at=rfc3339(clock.wall)))  # the lab republished
        assert agent.tap(ADA)["action"] == "started"
    finally:
        agent.stop()


@pytest.mark.parametrize("generated_at", [None, "not a time"], ids=["null", "unreadable"])
def test_freshness_a_list_of_unknown_age_is_stale(tmp_path, generated_at):
    agent = RunningAgent(config_text(tmp_path, extra='[members]\nmax_list_age = "1h"'))
    try:
        payload = members_json().replace(b'"2026-11-25T08:00:00Z"', b"null" if generated_at is None
                                         else f'"{generated_at}"'.encode())
        result = agent.apply(payload)
        if generated_at is None:
            assert result["applied"]
            assert agent.agent.call(agent.agent.status)["members_age_s"] is None
            assert agent.tap(ADA)["reason"] == "stale_member_list"
        else:
            assert not result["applied"] and "generated_at" in result["error"], "refused, the cache kept"
    finally:
        agent.stop()


def test_freshness_needs_a_trusted_clock(tmp_path):
    """An unsynchronised clock cannot tell a list's age: max_list_age fails closed."""

    class Unsynchronised:
        def synchronised(self) -> bool:
            return False

    clock = FakeClock()
    agent = RunningAgent(config_text(tmp_path, extra='[members]\nmax_list_age = "1h"'), clock=clock,
                         simulate=False)
    agent.agent.clock_status = Unsynchronised()
    try:
        agent.apply(members_json(generated_at=rfc3339(clock.wall)))
        assert agent.tap(ADA)["reason"] == "stale_member_list"
    finally:
        agent.stop()


@pytest.fixture
def connected(tmp_path, mosquitto):
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'
                                                 '[members]\nmax_list_age = "1h"\n'))
    agent = AgentProcess(config, storage)
    try:
        yield agent.start()
    finally:
        agent.stop()


def test_freshness_an_old_list_sent_again_never_becomes_fresh(connected, mosquitto):
    """Finding 2: re-sending an old (signed) list used to make it fresh again."""
    old = members_json(version=5, generated_at=ago(2 * HOUR))
    publish(mosquitto.port, "fabpass/members", old, retain=True)
    wait_for(lambda: connected.ask({"op": "status"})["members_version"] == 5, 10, "the list")
    for _ in range(2):  # delivered, then sent again by whoever kept it
        assert connected.ask({"op": "tap", "badge": ADA})["reason"] == "stale_member_list"
        assert connected.ask({"op": "status"})["members_age_s"] >= 2 * HOUR
        publish(mosquitto.port, "fabpass/members", old, retain=True)


def test_freshness_members_refresh_keeps_a_connected_agent_fresh(connected, mosquitto):
    """Finding 2: an agent that stays connected never gets the retained list again; the
    lab side republishes it as a new version made now (`fabpass members refresh`)."""
    publish(mosquitto.port, "fabpass/members", members_json(version=5, generated_at=ago(2 * HOUR)), retain=True)
    wait_for(lambda: connected.ask({"op": "status"})["members_version"] == 5, 10, "the list")
    assert connected.ask({"op": "tap", "badge": ADA})["reason"] == "stale_member_list"
    done = subprocess.run([sys.executable, "-m", "agent", "members", "refresh", "--broker", mosquitto.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: connected.ask({"op": "status"})["members_version"] > 5, 10, "the refreshed list")
    status = connected.ask({"op": "status"})
    assert status["members_age_s"] < 60 and status["members_count"] == 4
    assert connected.ask({"op": "tap", "badge": ADA})["action"] == "started"
