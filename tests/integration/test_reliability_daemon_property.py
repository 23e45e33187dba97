"""The whole agent (real SQLite, mock pins, a FakeClock) under random sequences of inputs.

Hypothesis drives a RunningAgent with taps by every kind of badge holder (a
trainer and members they may induct among them, and a badge nobody has),
clock advances, remote commands (enrolments too), the machine-running sensor,
the out-of-order button and the bypass key on their mock pins, member list
updates (generated before or after what the machine granted), clean restarts
and crashes. After every step the invariants are checked against the REAL
relay pin (the MockPin's level and its whole history) and the events in the
outbox, not against the agent's own idea of its state:

- the relay is on only while a session is open whose member was entitled to
  start it (or during the run-on after one), counting the inductions and
  badges the machine granted, as the test itself accounts for them; a refused
  tap never drives it on; an induction only during a trainer's session, to an
  active member who lacked it, on an unlocked machine; an enrolment only of a
  badge nobody has, within the window of an enrol command;
- every session_started is followed by exactly one session_ended for the same
  member, before the next start, across restarts too (`agent_restart` after a
  crash, `shutdown` after a clean stop);
- `seq` runs 1..N without gaps and every event_id is unique.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.timespec import parse_rfc3339, rfc3339
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
TESS = "04AAAA01"
UNKNOWN = "11223344"
FRESH = "0A0045B352"  # nobody's, until an enrolment binds it
SENSOR_PIN, REPORT_PIN, BYPASS_PIN = 27, 22, 23
BADGES = {"ada": ADA, "grace": GRACE, "alan": ALAN, "hedy": HEDY, "bob": BOB, "tess": TESS, "unknown": UNKNOWN,
          "fresh": FRESH}
START_MEMBERS = [*copy.deepcopy(MEMBERS["members"]), {
    "id": "bob", "name": "Bob", "badges": [BOB], "status": "active", "expires": None,
    "roles": [], "inductions": {"laser": None}}, {
    "id": "tess", "name": "Tess", "badges": [TESS], "status": "active", "expires": None,
    "roles": ["trainer:laser"], "inductions": {"laser": None}}]

# Steps ---------------------------------------------------------------------------------------

taps = st.tuples(st.just("tap"), st.sampled_from(sorted(BADGES)))
advances = st.tuples(st.just("advance"), st.sampled_from([1, 5, 11, 29, 31, 120, 301, 600, 3300, 3601]))
commands = st.tuples(st.just("command"), st.sampled_from(["lock", "lock_now", "unlock", "unlock", "end_session"]))
sensor = st.tuples(st.just("sensor"), st.booleans())
updates = st.tuples(st.just("update"), st.tuples(st.sampled_from(["ada", "alan", "bob", "grace", "tess"]),
                                                  st.sampled_from(["suspend", "remove", "restore"]),
                                                  st.booleans()))  # generated now, or long ago
restarts = st.tuples(st.just("restart"), st.sampled_from(["clean", "crash"]))
# at the machine
enrolments = st.tuples(st.just("enrol"), st.sampled_from(["alan", "bob", "nobody"]))
buttons = st.tuples(st.just("button"), st.sampled_from([0.5, 1.9, 2.0, 30.0]))  # held this long
bypasses = st.tuples(st.just("bypass"), st.booleans())
step = st.one_of(taps, taps, taps, taps, advances, commands, sensor, updates, restarts, enrolments, buttons,
                 bypasses)

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
    generated_at: str = "2026-11-25T08:00:00Z"
    locked: bool = False
    starts: int = 0  # taps answered "started"
    # what the machine granted: member -> when inducted; badge -> (member, when enrolled)
    inducted: dict[str, dt.datetime] = field(default_factory=dict)
    enrolled: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    enrolling: tuple[str, float] | None = None  # (member, until: monotonic)

    def member_of(self, badge: str) -> dict[str, Any] | None:
        listed = next((m for m in self.members.values() if badge in m["badges"]), None)
        if listed is None and badge in self.enrolled:
            return self.members.get(self.enrolled[badge][0])
        return listed

    def inducted_on_laser(self, m: dict[str, Any]) -> bool:
        return "laser" in m["inductions"] or m["id"] in self.inducted

    def may_start(self, badge: str) -> bool:
        m = self.member_of(badge)
        if m is None or m["status"] != "active" or not self.inducted_on_laser(m):
            return False
        return not self.locked or "staff" in m["roles"]

    def new_list(self, now: dt.datetime, fresh: bool) -> None:
        """A list generated now retires every grant (none made later); one generated long ago none."""
        self.version += 1
        if fresh:
            self.generated_at = rfc3339(now)
            self.inducted, self.enrolled = {}, {}

    def list_payload(self) -> bytes:
        return json.dumps({"v": 1, "version": self.version, "generated_at": self.generated_at,
                           "members": list(self.members.values())}).encode()


class Harness:
    def __init__(self, storage: Path, flavour: str, active_high: bool) -> None:
        machine, relay, has_sensor = FLAVOURS[flavour]
        extra = f'[sensor]\npin = {SENSOR_PIN}\nidle_timeout = "10m"\n' if has_sensor else ""
        extra += f"[report]\npin = {REPORT_PIN}\n[bypass]\npin = {BYPASS_PIN}\n"
        self.text = config_text(storage, active_high=active_high, machine=machine, relay=relay, extra=extra)
        self.storage = storage
        self.has_sensor = has_sensor
        self.run_on = 30.0 if relay and "run_on" in relay else 0.0
        self.on_level = 1 if active_high else 0
        self.clock = FakeClock()
        self.model = Model()
        self.sensor_high = False
        self.bypass_closed = False
        self.agent: RunningAgent | None = None
        self.start()

    # -- the agent's life --------------------------------------------------------------------

    def start(self) -> None:
        self.agent = RunningAgent(self.text, clock=self.clock)
        assert not self.relay_on(), "the relay must be off from the first instant after a start"
        if self.has_sensor and self.sensor_high:
            # The machine kept running across the restart: the new agent's sensor sees it.
            self.drive_sensor(True)
        if self.bypass_closed:  # and the key stayed turned
            self.drive(BYPASS_PIN, False, lambda: self.agent.agent.state.bypass.sensed)

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

    def drive(self, pin_number: int, high: bool, seen: Any) -> None:
        """Drive an input pin and wait until the agent's loop has taken the change."""
        pin = self.agent.pins.pin(pin_number)
        pin.drive_high() if high else pin.drive_low()
        wait_for(lambda: self.agent.agent.call(seen) == (not high), 5, f"the loop to see pin {pin_number}")

    # -- one step ------------------------------------------------------------------------------

    def do(self, kind: str, arg: Any) -> None:
        a, model = self.agent, self.model
        mark = len(a.relay_pin.states)
        if kind == "tap":
            badge = BADGES[arg]
            was_on = self.relay_on()
            session = self.open_session()
            idle = session is None
            enrolling = model.enrolling is not None and self.clock().mono < model.enrolling[1]
            to_enrol = enrolling and model.member_of(badge) is None and not (session and session["badge"] == badge)
            answer = a.tap(badge)
            assert (answer["action"] == "enrolled") == to_enrol, f"{arg} during {model.enrolling}: {answer}"
            if answer["action"] in ("refused", "enrolled", "inducted"):
                assert answer["granted"] == (answer["action"] != "refused")
                assert not self.relay_went_on_since(mark) or was_on, f"tap {answer} drove the relay on"
                assert self.relay_on() == was_on, f"a tap answered {answer} changed the relay"
            if answer["action"] == "started":
                model.starts += 1
                assert idle, "a session started over another one"
                assert model.may_start(badge), f"{arg} was granted a session the list does not allow: {answer}"
            elif answer["action"] == "enrolled":
                model.enrolled[badge] = (model.enrolling[0], self.clock().wall)
                model.enrolling = None
            elif answer["action"] == "inducted":
                m = model.member_of(badge)
                assert session is not None and session["member_id"] == "tess" != m["id"], "induction without its trainer"
                tess = model.members.get("tess")
                assert tess is not None and tess["status"] == "active", "an induction by a trainer the list revoked"
                assert m["status"] == "active" and not model.inducted_on_laser(m) and not model.locked
                model.inducted[m["id"]] = self.clock().wall
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
            who, change, fresh = arg
            model.new_list(self.clock().wall, fresh)
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
            model.enrolling = None  # an open enrolment does not outlive its agent
            self.start()
        elif kind == "taps":
            for who in arg:
                self.do("tap", who)
        elif kind == "enrol":
            a.agent.call(a.agent.command, Command("enrol", "tech", "", ts=self.clock.wall, member_id=arg))
            if arg in model.members:
                model.enrolling = (arg, self.clock().mono + 60)
        elif kind == "button":
            reports = len([e for e in read_events(self.storage) if e["type"] == "out_of_order_reported"])
            self.drive(REPORT_PIN, False, lambda: a.agent.state.report.sensed)
            self.clock.advance(arg)
            a.tick()
            self.drive(REPORT_PIN, True, lambda: a.agent.state.report.sensed)
            reported = len([e for e in read_events(self.storage) if e["type"] == "out_of_order_reported"])
            assert reported == reports + (arg >= 2.0), f"held {arg} s: {reported - reports} reports"
            if arg >= 2.0:
                model.locked = True
                assert self.open_session() is None and not self.relay_on(), "reported, yet on"
            self.clock.advance(2.0)  # the release settles
            a.tick()
        elif kind == "bypass":
            self.bypass_closed = arg
            self.drive(BYPASS_PIN, not arg, lambda: a.agent.state.bypass.sensed)
            self.clock.advance(0.5)
            a.tick()
            assert a.agent.call(a.agent.status)["bypass"] == arg
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
    for part in (agent.reader, agent.control, agent.link, agent.inputs, agent.indicators):
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
    run_steps(flavour, active_high, steps)


def run_steps(flavour: str, active_high: bool, steps: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(Path(tmp), flavour, active_high)
        try:
            assert harness.agent.apply(harness.model.list_payload())["applied"]
            for kind, arg in steps:
                harness.do(kind, arg)
            harness.finish()
        finally:
            harness.agent.stop()


# The same invariants with what happens at the machine weighing most: the trainer and the
# members she may induct, the badge nobody has and enrolments, the button, the bypass key,
# lists generated before and after the grants, unlocks (the button locks), restarts.
training_taps = st.tuples(st.just("tap"), st.sampled_from(["tess", "alan", "hedy", "fresh", "ada", "grace"]))
# the trainer taps, then someone else: the taps of an induction, or of a refusal of one
lessons = st.tuples(st.just("taps"), st.tuples(st.just("tess"), st.sampled_from(["alan", "alan", "hedy", "fresh",
                                                                                  "ada", "grace", "tess"])))
unlocks = st.tuples(st.just("command"), st.just("unlock"))
training = st.one_of(training_taps, training_taps, lessons, lessons, enrolments, buttons, bypasses,
                     updates, unlocks, restarts, advances)


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(flavour=st.sampled_from(sorted(FLAVOURS)), active_high=st.booleans(),
       steps=st.lists(training, min_size=8, max_size=16))
def test_reliability_daemon_invariants_hold_at_the_machine(flavour, active_high, steps):
    run_steps(flavour, active_high, steps)


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
