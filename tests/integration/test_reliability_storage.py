"""SQLite faults: a disk that fills during a session, and a member cache found corrupt at start."""

from __future__ import annotations

import pytest

from tests.support.agents import (
    ADA,
    GRACE,
    AgentProcess,
    RunningAgent,
    config_text,
    members_json,
)
from tests.support.helpers import publish, wait_for


@pytest.fixture
def agent(tmp_path):
    a = RunningAgent(config_text(tmp_path))
    yield a
    a.stop()


def fill_disk(a: RunningAgent) -> None:
    """From now on the outbox cannot grow: SQLite's own 'database or disk is full'."""
    conn = a.agent.outbox._conn
    a.agent.call(lambda: conn().execute(f"PRAGMA max_page_count = {conn().execute('PRAGMA page_count').fetchone()[0]}"))


def free_disk(a: RunningAgent) -> None:
    a.agent.call(lambda: a.agent.outbox._conn().execute("PRAGMA max_page_count = 1000000"))


def fill_up(a: RunningAgent) -> None:
    """Fill the disk and use up the free pages left in the file, with refusals that cannot be written."""
    fill_disk(a)
    for _ in range(200):  # a refusal of an unknown badge changes nothing but the outbox
        a.tap("11223344")
        if a.agent._unwritten:
            return
    raise AssertionError("the outbox never filled up")


def of_type(a: RunningAgent, kind: str) -> list[dict]:
    return [e for e in a.events() if e["type"] == kind]


def test_reliability_full_disk_during_a_session_ends_it_refuses_new_ones_and_recovers(agent):
    a = agent
    a.apply(members_json())
    assert a.tap(ADA)["action"] == "started" and a.relay_is_on()
    fill_up(a)
    # The session in progress ends normally: the relay goes off at once, no I/O first.
    answer = a.tap(ADA)
    assert answer["action"] == "ended" and answer["relay"] is False
    assert not a.relay_is_on()
    assert not of_type(a, "session_ended"), "the disk is full: the end waits in memory"
    # New sessions are refused, loudly, and the relay stays off.
    for badge in (ADA, GRACE):
        refused = a.tap(badge)
        assert refused["action"] == "refused" and refused["reason"] == "storage_error", refused
        assert not a.relay_is_on()
    assert a.agent.call(a.agent.status)["state"] == "idle"
    free_disk(a)
    # Space is back: the agent recovers by itself, with no restart.
    assert a.tap(ADA)["action"] == "started" and a.relay_is_on()
    ended = of_type(a, "session_ended")
    assert [(e["member_id"], e["reason"]) for e in ended] == [("ada", "badge_off")], "the end is recorded once"
    denied = [e["reason"] for e in of_type(a, "access_denied") if e["badge"] != "11223344"]
    assert denied == ["storage_error", "storage_error"]
    events = a.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events if e["type"] in ("session_started", "session_ended")]
    assert kinds == ["session_started", "session_ended", "session_started"], "the end comes before the next start"


def test_reliability_full_disk_end_is_written_once_space_returns_without_another_tap(agent):
    """The loop wakes at least once a second: an event held in memory after a full disk must
    reach the disk as soon as there is room, not wait for the next tap (a power cut in between
    would lose it, and the restart would record the session as ended later than it did)."""
    a = agent
    a.apply(members_json())
    a.tap(ADA)
    fill_up(a)
    assert a.tap(ADA)["action"] == "ended" and not a.relay_is_on()
    free_disk(a)
    wait_for(lambda: of_type(a, "session_ended"), 5, "the session_ended held in memory to be written")


def test_reliability_full_disk_clean_stop_writes_the_held_end(tmp_path):
    from tests.support.agents import read_events

    a = RunningAgent(config_text(tmp_path))
    try:
        a.apply(members_json())
        a.tap(ADA)
        fill_up(a)
        assert a.tap(ADA)["action"] == "ended"
        free_disk(a)
    finally:
        a.stop()
    events = read_events(tmp_path)
    ended = [e for e in events if e["type"] == "session_ended"]
    assert [(e["member_id"], e["reason"]) for e in ended] == [("ada", "badge_off")]
    assert events[-1]["type"] == "agent_stopped"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_reliability_corrupt_member_cache_is_rebuilt_from_the_retained_list(tmp_path, mosquitto):
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'))
    publish(mosquitto.port, "fabpass/members", members_json(version=3), retain=True)
    agent = AgentProcess(config, storage)
    try:
        agent.start()
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 3, 10, "the retained list")
        agent.kill()  # SIGKILL, then the cache is damaged while the agent is down
        (storage / "members.db").write_bytes(b"\x00garbage, not SQLite\xff" * 512)
        agent.start()
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 3, 10,
                 "the list rebuilt from the broker's retained snapshot")
        assert (storage / "members.corrupt").exists(), "the damaged file is kept aside for a post-mortem"
        assert agent.ask({"op": "status"})["members_count"] == 4
        assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started"
        assert agent.ask({"op": "tap", "badge": "11223344"})["reason"] == "unknown_badge"
    finally:
        agent.stop()
