"""The whole agent (real SQLite, mock pins, a FakeClock) under random sequences of inputs.

Hypothesis drives a RunningAgent with taps by every kind of badge holder, clock
advances, remote commands, the machine-running sensor, member list updates,
clean restarts and crashes. After every step the invariants are checked against
the REAL relay pin (the MockPin's level and its whole history) and the events
in the outbox, not against the agent's own idea of its state:

- the relay is on only while a session is open whose member was entitled to
  start it (or during the run-on after one); a refused tap never drives it on;
- every session_started is followed by exactly one session_ended for the same
  member, before the next start, across restarts too (`agent_restart` after a
  crash, `shutdown` after a clean stop);
- `seq` runs 1..N without gaps and every event_id is unique.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.timespec import parse_rfc3339
from agent.link.commands import Command
from tests.support.agents import (
    ADA,
    ALAN,
    GRACE,
    HEDY,
    MEMBERS,
    FakeClock,
    RunningAgent,
    config_text,
    read_events,
)
from tests.support.helpers import wait_for

BOB = "0B0B0B0B"
UNKNOWN = "11223344"
SENSOR_PIN = 27
BADGES = {"ada": ADA, "grace": GRACE, "alan": ALAN, "hedy": HEDY, "bob": BOB, "unknown": UNKNOWN}
START_MEMBERS = [*copy.deepcopy(MEMBERS["members"]), {
    "id": "bob", "name": "Bob", "badges": [BOB], "status": "active", "expires": None,
    "roles": [], "inductions": {"laser": None}}]

# Steps ---------------------------------------------------------------------------------------

taps = st.tuples(st.just("tap"), st.sampled_from(sorted(BADGES)))
advances = st.tuples(st.just("advance"), st.sampled_from([1, 5, 11, 29, 31, 120, 301, 600, 3300, 3601]))
commands = st.tuples(st.just("command"), st.sampled_from(["lock", "lock_now", "unlock", "end_session"]))
sensor = st.tuples(st.just("sensor"), st.booleans())
updates = st.tuples(st.just("update"), st.tuples(st.sampled_from(["ada", "bob", "grace"]),
                                                  st.sampled_from(["suspend", "remove", "restore"])))
restarts = st.tuples(st.just("restart"), st.sampled_from(["clean", "crash"]))
step = st.one_of(taps, taps, taps, advances, commands, sensor, updates, restarts)

FLAVOURS = {
    # name: (machine lines, relay lines, sensor?)
    "plain": ("", "", False),
    "timed": ('max_session = "1h"\nwarn_before = "5m"', 'run_on = "30s"\nmin_off = "10s"', False),
    "sensor": ('max_session = "1h"\nwarn_before = "5m"\nhard_limit = "2h"', 'run_on = "30s"', True),
}


@dataclass
class Model:
    """What the test knows independently of the agent: the list it applied, the lock it commanded."""

    members: dict[str, dict[str, Any]] = field(default_factory=lambda: {m["id"]: copy.deepcopy(m)
                                                                        for m in START_MEMBERS})
    version: int = 1
    locked: bool = False
    starts: int = 0  # taps answered "started"

    def member_of(self, badge: str) -> dict[str, Any] | None:
        return next((m for m in self.members.values() if badge in m["badges"]), None)

    def may_start(self, badge: str) -> bool:
        m = self.member_of(badge)
        if m is None or m["status"] != "active" or "laser" not in m["inductions"]:
            return False
        return not self.locked or "staff" in m["roles"]

    def list_payload(self) -> bytes:
        return json.dumps({"v": 1, "version": self.version, "generated_at": "2026-11-25T08:00:00Z",
                           "members": list(self.members.values())}).encode()


class Harness:
    def __init__(self, storage: Path, flavour: str, active_high: bool) -> None:
        machine, relay, has_sensor = FLAVOURS[flavour]
        extra = f'[sensor]\npin = {SENSOR_PIN}\nidle_timeout = "10m"\n' if has_sensor else ""
        self.text = config_text(storage, active_high=active_high, machine=machine, relay=relay, extra=extra)
        self.storage = storage
        self.has_sensor = has_sensor
        self.run_on = 30.0 if relay and "run_on" in relay else 0.0
        self.on_level = 1 if active_high else 0
        self.clock = FakeClock()
        self.model = Model()
        self.sensor_high = False
        self.agent: RunningAgent | None = None
        self.start()

    # -- the agent's life --------------------------------------------------------------------

    def start(self) -> None:
        self.agent = RunningAgent(self.text, clock=self.clock)
        assert not self.relay_on(), "the relay must be off from the first instant after a start"
        if self.has_sensor and self.sensor_high:
            # The machine kept running across the restart: the new agent's sensor sees it.
            self.drive_sensor(True)

    def relay_on(self) -> bool:
        return self.agent.relay_pin.state == self.on_level

    def relay_went_on_since(self, mark: int) -> bool:
        return any(int(s.state) == self.on_level for s in self.agent.relay_pin.states[mark:])

    def stop(self, crash: bool) -> bool:
        """Stop the agent; returns whether the relay pin was on when the agent let go of it."""
        a = self.agent
        seen: list[bool] = []
        if crash:
            # A crash or power cut: the process vanishes without recording anything.
            a.agent._shutdown = lambda: _vanish(a.agent)
        else:
            close = a.agent.relay.close

            def watched_close() -> None:  # the pin reads as unconfigured once closed: look before
                seen.append(self.relay_on())
                close()

            a.agent.relay.close = watched_close
        a.stop()
        return bool(seen and seen[0])

    def drive_sensor(self, high: bool) -> None:
        self.sensor_high = high
        pin = self.agent.pins.pin(SENSOR_PIN)
        pin.drive_high() if high else pin.drive_low()
        wait_for(lambda: self.agent.agent.call(lambda: self.agent.agent.state.running) == high, 5, "the sensor input")

    # -- one step ------------------------------------------------------------------------------

    def do(self, kind: str, arg: Any) -> None:
        a, model = self.agent, self.model
        mark = len(a.relay_pin.states)
        if kind == "tap":
            badge = BADGES[arg]
            was_on = self.relay_on()
            idle = self.open_session() is None
            answer = a.tap(badge)
            if answer["action"] == "refused":
                assert not answer["granted"]
                assert not self.relay_went_on_since(mark) or was_on, f"refused tap {answer} drove the relay on"
                assert self.relay_on() == was_on, f"a refused tap changed the relay: {answer}"
            if answer["action"] == "started":
                model.starts += 1
                assert idle, "a session started over another one"
                assert model.may_start(badge), f"{arg} was granted a session the list does not allow: {answer}"
            elif idle and answer["action"] == "refused":
                assert not model.may_start(badge), f"{arg} may use the machine but was refused: {answer}"
        elif kind == "advance":
            self.clock.advance(arg)
            a.tick()
        elif kind == "command":
            command, now_flag = ("lock", True) if arg == "lock_now" else (arg, False)
            sent = Command(command, "tech", "property test", now_flag, ts=self.clock.wall)  # ends any session
            a.agent.call(a.agent.command, sent)
            if command == "lock":
                model.locked = True
            elif command == "unlock":
                model.locked = False
        elif kind == "sensor":
            if self.has_sensor:
                self.drive_sensor(arg)
                a.tick()
        elif kind == "update":
            who, change = arg
            model.version += 1
            if change == "remove":
                model.members.pop(who, None)
            else:
                original = next(m for m in START_MEMBERS if m["id"] == who)
                model.members[who] = {**copy.deepcopy(original),
                                      "status": "suspended" if change == "suspend" else "active"}
            result = a.apply(model.list_payload())
            assert result["applied"], result
        elif kind == "restart":
            relay_on_at_exit = self.stop(crash=arg == "crash")
            assert not relay_on_at_exit, "a clean stop switches the relay off"
            self.start()
        self.check()

    # -- the invariants --------------------------------------------------------------------------

    def open_session(self) -> dict[str, Any] | None:
        return check_event_log(read_events(self.storage))[0]

    def check(self) -> None:
        events = read_events(self.storage)
        open_start, last_end = check_event_log(events)
        started = [e for e in events if e["type"] == "session_started"]
        assert len(started) == self.model.starts, "every session_started answers a granted tap, and only that"
        if self.relay_on():
            if open_start is None:
                assert last_end is not None and self.run_on > 0, "relay on with no session and no run-on"
                ended_at = parse_rfc3339(last_end["ts"])
                assert (self.clock().wall - ended_at).total_seconds() < self.run_on, \
                    "relay still on after the run-on"

    def finish(self) -> None:
        relay_on_at_exit = self.stop(crash=False)
        assert not relay_on_at_exit, "a clean stop switches the relay off"
        open_start, _ = check_event_log(read_events(self.storage))
        assert open_start is None, "a clean stop leaves no session open"


def check_event_log(events: list[dict[str, Any]]) -> tuple[dict | None, dict | None]:
    """Check seq, event_id and session pairing; return (the open session_started, the last session_ended)."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq must run 1..N without gaps"
    assert len({e["event_id"] for e in events}) == len(events), "event_ids must be unique"
    open_start: dict | None = None
    last_end: dict | None = None
    for e in events:
        if e["type"] == "session_started":
            assert open_start is None, f"session_started seq {e['seq']} while seq {open_start and open_start['seq']} is open"
            open_start = e
        elif e["type"] == "session_ended":
            assert open_start is not None, f"session_ended seq {e['seq']} without a session"
            assert e["member_id"] == open_start["member_id"], "session_ended names another member"
            if e["reason"] == "agent_restart":
                assert e["end_estimated"] is True
            open_start, last_end = None, e
        elif e["type"] == "agent_started":
            # A restart closes an open session (agent_restart) before it says it has started.
            assert open_start is None, f"agent_started seq {e['seq']} with a session still open"
    return open_start, last_end


def _vanish(agent: Any) -> None:
    """Release what a killed process's kernel would release; record nothing, switch nothing."""
    for part in (agent.reader, agent.control, agent.link, agent.sensor, agent.indicators):
        if part is not None:
            part.close()
    agent.relay.device.close()
    agent.cache.close()
    agent.outbox.close()
    agent.lock.release()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(flavour=st.sampled_from(sorted(FLAVOURS)), active_high=st.booleans(),
       steps=st.lists(step, min_size=1, max_size=14))
def test_reliability_daemon_invariants_hold_under_random_inputs(flavour, active_high, steps):
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(Path(tmp), flavour, active_high)
        try:
            assert harness.agent.apply(harness.model.list_payload())["applied"]
            for kind, arg in steps:
                harness.do(kind, arg)
            harness.finish()
        finally:
            harness.agent.stop()


def test_reliability_daemon_crash_mid_session_is_closed_as_agent_restart(tmp_path):
    """The crash step of the property test, spelled out: it must actually produce agent_restart."""
    harness = Harness(tmp_path, "plain", False)
    try:
        harness.agent.apply(harness.model.list_payload())
        harness.do("tap", "ada")
        assert harness.relay_on()
        harness.do("restart", "crash")
        assert not harness.relay_on()
        ended = [e for e in read_events(tmp_path) if e["type"] == "session_ended"]
        assert [(e["member_id"], e["reason"]) for e in ended] == [("ada", "agent_restart")]
        harness.do("tap", "ada")
        assert harness.relay_on(), "a new session starts normally after the crash"
        harness.finish()
    finally:
        harness.agent.stop()
