"""agent.core.session: the pure state machine, driven with explicit instants (no clock, no mocks).

Tables for each rule, then a hypothesis property test over random input sequences.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.hours import OpeningHours
from agent.core.model import Instant, Member, Signal
from agent.core.policy import Rules, decide
from agent.core.session import (
    BypassKey,
    EndSession,
    Enrol,
    Indicate,
    LastTap,
    Lock,
    Machine,
    NewList,
    Outcome,
    Record,
    Relay,
    ReportButton,
    Running,
    Shutdown,
    State,
    Step,
    Tap,
    Tick,
    Timing,
    Unlock,
    handle,
    next_wakeup,
)

T0 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc)  # a Wednesday
MONO0 = 1000.0


def at(seconds: float) -> Instant:
    return Instant(T0 + dt.timedelta(seconds=seconds), MONO0 + seconds)


def mono(seconds: float) -> float:
    return MONO0 + seconds


def person(mid: str, badge: str, *, staff: bool = False, status: str = "active",
           inductions: dict | None = None, expires: dt.date | None = None) -> Member:
    return Member(id=mid, name=mid, status=status, expires=expires,
                  roles=frozenset({"staff"}) if staff else frozenset(),
                  inductions={"laser": None} if inductions is None else inductions, badges=(badge,))


ADA = person("m-ada", "04A1B2C3")
ADA_PHONE = "04A1B2C3D4E5F6"  # Ada's second badge
BOB = person("m-bob", "04B0B0B0")
STAFF_UNINDUCTED = person("m-staff2", "0455AA66", staff=True, inductions={})
STAFF = person("m-staff", "0455AA55", staff=True)
SUSPENDED = person("m-sus", "04DEAD00", status="suspended")
UNINDUCTED = person("m-new", "04000001", inductions={"cnc": None})
UNKNOWN = "0499999999"  # 5-byte EM4100, not on the list


def tap(who: Member | None, badge: str | None = None, stale: bool = False) -> Tap:
    if badge is None:
        badge = who.badges[0] if who is not None else UNKNOWN
    return Tap(badge, who, stale)


def machine(**timing) -> Machine:
    has_sensor = timing.pop("has_sensor", False)
    hours = timing.pop("hours", None)
    tz = timing.pop("tz", dt.timezone.utc)
    return Machine(Rules("laser", hours), Timing(**timing), tz, has_sensor)


PLAIN = machine()


def run(events, m: Machine = PLAIN, state: State | None = None) -> tuple[State, list[Step]]:
    """Feed `(seconds, input)` pairs; return the final state and every step."""
    state = state or State()
    steps = []
    for seconds, event in events:
        step = handle(state, event, at(seconds), m)
        steps.append(step)
        state = step.state
    return state, steps


def records(step: Step) -> list[tuple[str, dict]]:
    return [(a.type, a.fields) for a in step.actions if isinstance(a, Record)]


def relays(step: Step) -> list[bool]:
    return [a.on for a in step.actions if isinstance(a, Relay)]


def started(m: Machine = PLAIN, who: Member = ADA, seconds: float = 0) -> State:
    state, _ = run([(seconds, tap(who))], m)
    assert state.session is not None and state.session.member_id == who.id
    return state


# --- starting -------------------------------------------------------------------------------


def test_session_start_records_before_relay_on():
    step = handle(State(), tap(ADA), at(0), PLAIN)
    assert step.actions == (
        Record("session_started", {"member_id": "m-ada", "badge": "04A1B2C3"}),
        Relay(True),
        Indicate(Signal.GRANTED),
    )
    assert step.outcome == Outcome("started", None, True, "m-ada")
    assert step.outcome.as_dict() == {"action": "started", "granted": True, "reason": None,
                                      "relay": True, "member_id": "m-ada"}
    s = step.state
    assert s.relay and s.label == "in_use" and s.since == T0
    assert s.session.member_id == "m-ada" and s.session.badge == "04A1B2C3"
    assert s.session.started == T0 and s.session.started_mono == mono(0)
    assert s.session.deadline is None


@pytest.mark.parametrize(
    "state, tapped, reason, member_id",
    [
        (State(), tap(None), "unknown_badge", None),
        (State(), tap(ADA, stale=True), "stale_member_list", "m-ada"),
        (State(), tap(SUSPENDED), "suspended", "m-sus"),
        (State(), tap(person("m-old", "04010101", expires=dt.date(2026, 11, 24))), "membership_expired", "m-old"),
        (State(), tap(UNINDUCTED), "not_inducted", "m-new"),
        (State(), tap(person("m-lapsed", "04020202", inductions={"laser": dt.date(2026, 1, 1)})),
         "induction_expired", "m-lapsed"),
        (State(locked=True), tap(ADA), "machine_locked", "m-ada"),
        (State(locked=True), tap(SUSPENDED), "suspended", "m-sus"),
        (started(), tap(BOB), "in_use", "m-bob"),
        (started(), tap(SUSPENDED), "suspended", "m-sus"),
        (started(), tap(None), "unknown_badge", None),
        (started(), tap(BOB, stale=True), "stale_member_list", "m-bob"),
    ],
)
def test_session_refusal_leaves_state_untouched(state, tapped, reason, member_id):
    step = handle(state, tapped, at(5), PLAIN)
    assert step.state == state
    fields = {"badge": tapped.badge, "reason": reason}
    if member_id:
        fields["member_id"] = member_id
    assert step.actions == (Record("access_denied", fields), Indicate(Signal.REFUSED))
    assert step.outcome == Outcome("refused", reason, state.relay, member_id)
    assert not step.outcome.granted and Relay(True) not in step.actions


def test_session_outside_hours_refused_but_staff_granted():
    m = machine(hours=OpeningHours.parse(["mon-fri 09:00-19:00"]))
    late = Instant(T0.replace(hour=21), mono(0))
    assert handle(State(), tap(ADA), late, m).outcome.reason == "outside_hours"
    assert handle(State(), tap(STAFF), late, m).outcome.action == "started"


def test_session_staff_start_a_locked_machine_and_it_reads_in_use():
    step = handle(State(locked=True), tap(STAFF), at(0), PLAIN)
    assert step.outcome.action == "started" and step.state.relay
    assert step.state.label == "in_use" and step.state.locked


def test_session_staff_start_with_a_stale_list():
    assert handle(State(), tap(STAFF, stale=True), at(0), PLAIN).outcome.action == "started"


@pytest.mark.parametrize(
    "wall, granted",
    [
        (dt.datetime(2026, 6, 30, 21, 59, tzinfo=dt.timezone.utc), True),   # 23:59 in Rome
        (dt.datetime(2026, 6, 30, 22, 0, tzinfo=dt.timezone.utc), False),   # 00:00 on 1 July in Rome
    ],
)
def test_session_expiry_read_in_the_machine_timezone(wall, granted):
    m = machine(tz=zoneinfo.ZoneInfo("Europe/Rome"))
    who = person("m-june", "04030303", expires=dt.date(2026, 6, 30))
    step = handle(State(), tap(who), Instant(wall, 0.0), m)
    assert step.outcome.granted is granted
    if not granted:
        assert step.outcome.reason == "membership_expired"


def test_session_opening_hours_read_in_the_machine_timezone():
    m = machine(tz=zoneinfo.ZoneInfo("America/New_York"),
                hours=OpeningHours.parse(["mon-fri 09:00-17:00"]))
    # 15:00 UTC is 10:00 in New York (winter): open; 23:00 UTC is 18:00 there: closed.
    assert handle(State(), tap(ADA), Instant(T0.replace(hour=15), 0.0), m).outcome.granted
    assert handle(State(), tap(ADA), Instant(T0.replace(hour=23), 0.0), m).outcome.reason == "outside_hours"


# --- ending ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "second_tap, reason, by",
    [
        (tap(ADA), "badge_off", None),
        (tap(ADA, ADA_PHONE), "badge_off", None),          # same member, another badge
        (tap(None, "04A1B2C3"), "badge_off", None),         # same badge, since removed from the list
        (tap(ADA, stale=True), "badge_off", None),          # leaving is never refused
        (tap(STAFF), "staff", "m-staff"),
    ],
)
def test_session_tap_ends(second_tap, reason, by):
    state = started()
    step = handle(state, second_tap, at(125.5), PLAIN)
    fields = {"member_id": "m-ada", "duration_s": 125.5, "reason": reason}
    if by:
        fields["by"] = by
    assert step.actions == (Relay(False), Record("session_ended", fields), Indicate(Signal.ENDED))
    assert step.state.session is None and not step.state.relay
    assert step.state.last_off == mono(125.5) and step.state.previous_member == "m-ada"
    assert step.state.label == "idle" and step.state.since == at(125.5).wall
    assert step.outcome == Outcome("ended", None, False, by or "m-ada")


def test_session_staff_end_does_not_take_over():
    state, steps = run([(0, tap(ADA)), (10, tap(STAFF))])
    assert state.session is None
    assert [r[0] for s in steps for r in records(s)] == ["session_started", "session_ended"]


def test_session_staff_tap_on_own_session_is_badge_off():
    state, steps = run([(0, tap(STAFF)), (10, tap(STAFF))])
    assert state.session is None
    assert records(steps[1])[0][1]["reason"] == "badge_off"


def test_session_end_session_command():
    step = handle(started(), EndSession("tech", "jammed"), at(60), PLAIN)
    assert step.actions == (Relay(False),
                            Record("session_ended", {"member_id": "m-ada", "duration_s": 60.0,
                                                     "reason": "remote", "by": "tech"}),
                            Indicate(Signal.ENDED))


def test_session_end_session_command_when_idle_does_nothing():
    step = handle(State(), EndSession("tech"), at(60), PLAIN)
    assert step.state == State() and step.actions == () and step.outcome is None


def test_session_shutdown_ends_with_reason_shutdown():
    step = handle(started(), Shutdown(), at(30), PLAIN)
    assert relays(step) == [False]
    assert records(step) == [("session_ended", {"member_id": "m-ada", "duration_s": 30.0, "reason": "shutdown"})]
    assert not step.state.relay


@pytest.mark.parametrize(
    "state, actions",
    [
        (State(), ()),
        (State(relay=True, run_on_until=mono(50)), (Relay(False),)),
    ],
)
def test_session_shutdown_when_idle(state, actions):
    step = handle(state, Shutdown(), at(10), PLAIN)
    assert step.actions == actions and not step.state.relay and step.state.run_on_until is None


# --- lock / unlock ------------------------------------------------------------------------------


def test_session_lock_idle_machine():
    step = handle(State(), Lock("tech", "laser tube"), at(1), PLAIN)
    assert step.actions == (Record("machine_locked", {"by": "tech", "reason": "laser tube"}),)
    assert step.state.locked and step.state.label == "locked" and step.state.since == at(1).wall


def test_session_lock_during_session_takes_effect_after_it():
    state, steps = run([
        (0, tap(ADA)),
        (10, Lock("tech", "maintenance")),
        (20, tap(ADA)),
        (30, tap(BOB)),
    ])
    lock_step = steps[1]
    assert lock_step.state.session is not None and lock_step.state.relay and relay_free(lock_step)
    assert lock_step.state.label == "in_use" and lock_step.state.locked
    assert steps[2].outcome.action == "ended" and steps[2].state.label == "locked"
    assert steps[3].outcome.reason == "machine_locked"


def relay_free(step: Step) -> bool:
    return not any(isinstance(a, Relay) for a in step.actions)


def test_session_lock_now_ends_the_session_remote():
    step = handle(started(), Lock("tech", "fire", now=True), at(42), PLAIN)
    assert records(step) == [
        ("machine_locked", {"by": "tech", "reason": "fire"}),
        ("session_ended", {"member_id": "m-ada", "duration_s": 42.0, "reason": "remote", "by": "tech"}),
    ]
    assert relays(step) == [False]
    assert step.state.session is None and step.state.locked and step.state.label == "locked"


def test_session_unlock():
    step = handle(State(locked=True), Unlock("tech", "fixed"), at(5), PLAIN)
    assert step.actions == (Record("machine_unlocked", {"by": "tech", "reason": "fixed"}),)
    assert not step.state.locked and step.state.label == "idle"
    assert handle(step.state, tap(ADA), at(6), PLAIN).outcome.action == "started"


def test_session_since_changes_only_with_the_label():
    state, steps = run([(0, tap(ADA)), (10, Lock("t", "r")), (20, Unlock("t")), (30, tap(ADA))])
    assert [s.state.since for s in steps] == [at(0).wall, at(0).wall, at(0).wall, at(30).wall]


# --- max_session, warning, extension ---------------------------------------------------------

MAX = machine(max_session=3600, warn_before=300)


@pytest.mark.parametrize(
    "seconds, actions, warned, ended",
    [
        (0, (), False, False),
        (3299.9, (), False, False),
        (3300, (Indicate(Signal.WARNING),), True, False),
        (3599, (Indicate(Signal.WARNING),), True, False),
        (3600, (Relay(False),
                Record("session_ended", {"member_id": "m-ada", "duration_s": 3600.0, "reason": "timeout"}),
                Indicate(Signal.ENDED)), None, True),
        (9000, (Relay(False),
                Record("session_ended", {"member_id": "m-ada", "duration_s": 9000.0, "reason": "timeout"}),
                Indicate(Signal.ENDED)), None, True),
    ],
)
def test_session_max_session_tick(seconds, actions, warned, ended):
    step = handle(started(MAX), Tick(), at(seconds), MAX)
    assert step.actions == actions
    if ended:
        assert step.state.session is None and not step.state.relay
    else:
        assert step.state.session.warned is warned and step.state.relay


def test_session_warning_only_once():
    state, steps = run([(0, tap(ADA)), (3300, Tick()), (3400, Tick())], MAX)
    assert steps[1].actions == (Indicate(Signal.WARNING),) and steps[2].actions == ()


def test_session_holder_tap_in_warning_window_extends():
    state, steps = run([(0, tap(ADA)), (3300, Tick()), (3400, tap(ADA, ADA_PHONE))], MAX)
    ext = steps[2]
    assert ext.outcome == Outcome("extended", None, True, "m-ada") and ext.outcome.granted
    assert ext.actions == (Record("session_extended", {"member_id": "m-ada", "badge": ADA_PHONE}),
                           Indicate(Signal.GRANTED))
    assert state.session.deadline == mono(3400 + 3600) and not state.session.warned
    assert state.session.started_mono == mono(0)
    # the next warning and timeout follow the new deadline
    assert handle(state, Tick(), at(3600), MAX).actions == ()
    assert next_wakeup(state, MAX) == mono(3400 + 3300)
    end = handle(state, Tick(), at(7000), MAX)
    assert records(end)[0][1] == {"member_id": "m-ada", "duration_s": 7000.0, "reason": "timeout"}


def test_session_holder_tap_before_warning_ends():
    state, steps = run([(0, tap(ADA)), (3000, Tick()), (3100, tap(ADA))], MAX)
    assert steps[2].outcome.action == "ended" and state.session is None


def test_session_other_tap_in_warning_window_is_in_use():
    state, steps = run([(0, tap(ADA)), (3300, Tick()), (3400, tap(BOB))], MAX)
    assert steps[2].outcome.reason == "in_use" and state.session.warned


def test_session_refused_extension_ends_the_session_saying_why():
    lapsed = ADA._replace(status="suspended")
    state, steps = run([(0, tap(ADA)), (3300, Tick()), (3400, tap(lapsed))], MAX)
    assert state.session is None and not state.relay
    assert steps[2].outcome.action == "ended"
    assert records(steps[2]) == [("session_ended", {"member_id": "m-ada", "duration_s": 3400.0,
                                                    "reason": "badge_off", "extension_refused": "suspended"})]


def test_session_staff_without_the_induction_still_end_someone_elses_session():
    state, steps = run([(0, tap(ADA)), (10, tap(STAFF_UNINDUCTED))], PLAIN)
    assert state.session is None
    assert records(steps[1])[0][1]["reason"] == "staff" and records(steps[1])[0][1]["by"] == "m-staff2"


# --- hard_limit and the machine-running sensor ------------------------------------------------

SENSED = machine(max_session=3600, warn_before=300, hard_limit=7200, has_sensor=True)


def test_session_running_machine_not_cut_by_max_session():
    state, steps = run([(0, Running(True)), (1, tap(ADA)), (3400, Tick()), (3700, Tick()), (7000, Tick())], SENSED)
    assert steps[2].actions == (Indicate(Signal.WARNING),)
    assert steps[3].actions == () and steps[4].actions == ()
    assert state.session is not None and state.relay


def test_session_running_machine_cut_by_hard_limit():
    state, steps = run([(0, Running(True)), (1, tap(ADA)), (3400, Tick()), (7201, Tick())], SENSED)
    assert records(steps[3]) == [("session_ended", {"member_id": "m-ada", "duration_s": 7200.0,
                                                    "reason": "timeout"})]
    assert relays(steps[3]) == [False]


def test_session_machine_stops_after_deadline_ends_at_once():
    state, steps = run([(0, Running(True)), (1, tap(ADA)), (3400, Tick()), (4000, Running(False))], SENSED)
    assert records(steps[3])[0][1]["reason"] == "timeout" and state.session is None


def test_session_without_sensor_running_flag_is_ignored():
    m = machine(max_session=3600, warn_before=300)
    state, steps = run([(0, Running(True)), (1, tap(ADA)), (3601, Tick())], m)
    assert records(steps[2])[0][1]["reason"] == "timeout"


@pytest.mark.parametrize("hard_limit, reason", [(600, "timeout"), (None, None)])
def test_session_hard_limit_without_max_session(hard_limit, reason):
    m = machine(hard_limit=hard_limit)
    step = handle(started(m), Tick(), at(600), m)
    assert (records(step)[0][1]["reason"] if records(step) else None) == reason


IDLE = machine(idle_timeout=600, has_sensor=True)


@pytest.mark.parametrize(
    "events, end_at, ended",
    [
        # never started running: idle from the tap
        ([(0, tap(ADA))], 599, False),
        ([(0, tap(ADA))], 600, True),
        # ran, then stopped at 100: idle from 100
        ([(0, tap(ADA)), (50, Running(True)), (100, Running(False))], 699, False),
        ([(0, tap(ADA)), (50, Running(True)), (100, Running(False))], 700, True),
        # running at the tap: never idle while it runs
        ([(-10, Running(True)), (0, tap(ADA))], 5000, False),
        # a repeated "stopped" does not restart the idle clock
        ([(0, tap(ADA)), (300, Running(False))], 600, True),
    ],
)
def test_session_idle_timeout(events, end_at, ended):
    state, _ = run(events, IDLE)
    step = handle(state, Tick(), at(end_at), IDLE)
    if ended:
        assert records(step) == [("session_ended", {"member_id": "m-ada", "duration_s": float(end_at),
                                                    "reason": "idle"})]
        assert relays(step) == [False]
    else:
        assert step.actions == () and step.state.session is not None


def test_session_idle_timeout_needs_a_sensor():
    m = machine(idle_timeout=600, has_sensor=False)
    step = handle(started(m), Tick(), at(10_000), m)
    assert step.actions == ()


def test_session_running_change_ends_idle_session_at_once():
    state, steps = run([(0, tap(ADA)), (700, Running(False))], IDLE)
    assert records(steps[1])[0][1]["reason"] == "idle"


# --- min_off ----------------------------------------------------------------------------------

MIN_OFF = machine(min_off=5)


def test_session_min_off_delays_the_relay_until_a_tick():
    state, steps = run([(0, tap(ADA)), (10, tap(ADA)), (12, tap(BOB))], MIN_OFF)
    start = steps[2]
    assert start.outcome == Outcome("started", None, False, "m-bob")
    assert start.actions == (Record("session_started", {"member_id": "m-bob", "badge": "04B0B0B0"}),
                             Indicate(Signal.GRANTED))
    assert not state.relay and state.relay_on_at == mono(15)
    assert next_wakeup(state, MIN_OFF) == mono(15)
    assert handle(state, Tick(), at(14.9), MIN_OFF).actions == ()
    on = handle(state, Tick(), at(15), MIN_OFF)
    assert on.actions == (Relay(True),) and on.state.relay and on.state.relay_on_at is None


def test_session_min_off_passed_relay_on_at_once():
    state, steps = run([(0, tap(ADA)), (10, tap(ADA)), (15, tap(BOB))], MIN_OFF)
    assert relays(steps[2]) == [True] and state.relay


def test_session_min_off_first_session_ever_is_not_delayed():
    assert relays(handle(State(), tap(ADA), at(0), MIN_OFF)) == [True]


def test_session_min_off_session_ended_before_relay_came_on():
    state, steps = run([(0, tap(ADA)), (10, tap(ADA)), (11, tap(BOB)), (12, tap(BOB))], MIN_OFF)
    end = steps[3]
    assert relays(end) == [] and records(end)[0][0] == "session_ended"
    assert state.relay_on_at is None and not state.relay and state.last_off == mono(10)
    assert handle(state, Tick(), at(20), MIN_OFF).actions == ()


# --- run_on -----------------------------------------------------------------------------------

RUN_ON = machine(run_on=60)


def test_session_run_on_keeps_relay_then_tick_turns_it_off():
    state, steps = run([(0, tap(ADA)), (100, tap(ADA))], RUN_ON)
    end = steps[1]
    assert relays(end) == [] and records(end)[0][0] == "session_ended"
    assert end.outcome == Outcome("ended", None, True, "m-ada")
    assert state.relay and state.session is None and state.run_on_until == mono(160)
    assert state.label == "idle"
    assert next_wakeup(state, RUN_ON) == mono(160)
    assert handle(state, Tick(), at(159), RUN_ON).actions == ()
    off = handle(state, Tick(), at(160), RUN_ON)
    assert off.actions == (Relay(False),)
    assert not off.state.relay and off.state.run_on_until is None and off.state.last_off == mono(160)


def test_session_run_on_new_session_keeps_relay_on():
    state, steps = run([(0, tap(ADA)), (100, tap(ADA)), (120, tap(BOB))], RUN_ON)
    assert relays(steps[2]) == [] and steps[2].outcome.relay
    assert state.relay and state.run_on_until is None and state.session.member_id == "m-bob"
    assert handle(state, Tick(), at(200), RUN_ON).actions == ()


def test_session_run_on_not_applied_on_shutdown():
    state, steps = run([(0, tap(ADA)), (100, Shutdown())], RUN_ON)
    assert relays(steps[1]) == [False] and not state.relay and state.run_on_until is None


def test_session_run_on_then_min_off_counts_from_real_off():
    m = machine(run_on=60, min_off=30)
    state, steps = run([(0, tap(ADA)), (100, tap(ADA)), (160, Tick()), (170, tap(BOB))], m)
    assert not state.relay and state.relay_on_at == mono(190)


# --- ordering of ending steps -----------------------------------------------------------------

ENDINGS = [
    ("badge_off", PLAIN, [(0, tap(ADA)), (5, tap(ADA))]),
    ("staff", PLAIN, [(0, tap(ADA)), (5, tap(STAFF))]),
    ("remote", PLAIN, [(0, tap(ADA)), (5, EndSession("t"))]),
    ("lock_now", PLAIN, [(0, tap(ADA)), (5, Lock("t", "r", now=True))]),
    ("shutdown", PLAIN, [(0, tap(ADA)), (5, Shutdown())]),
    ("timeout", MAX, [(0, tap(ADA)), (3600, Tick())]),
    ("hard_limit", SENSED, [(0, Running(True)), (1, tap(ADA)), (9000, Tick())]),
    ("idle", IDLE, [(0, tap(ADA)), (601, Tick())]),
    ("idle_running_change", IDLE, [(0, tap(ADA)), (601, Running(False))]),
]


@pytest.mark.parametrize("name, m, events", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_session_relay_off_before_session_ended_record(name, m, events):
    _, steps = run(events, m)
    actions = list(steps[-1].actions)
    kinds = [("relay_off" if isinstance(a, Relay) and not a.on else
              a.type if isinstance(a, Record) else None) for a in actions]
    assert "relay_off" in kinds and "session_ended" in kinds
    assert kinds.index("relay_off") < kinds.index("session_ended")
    assert steps[-1].state.session is None and not steps[-1].state.relay


# --- next_wakeup ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "m, events, expected",
    [
        (PLAIN, [], None),
        (PLAIN, [(0, tap(ADA))], None),
        (MAX, [(0, tap(ADA))], mono(3300)),
        (MAX, [(0, tap(ADA)), (3300, Tick())], mono(3600)),
        (SENSED, [(0, tap(ADA))], mono(3300)),  # not running: warning first
        (SENSED, [(0, Running(True)), (0, tap(ADA)), (3300, Tick())], mono(7200)),  # running: only the hard limit
        (machine(max_session=3600, warn_before=300, has_sensor=True),
         [(0, Running(True)), (0, tap(ADA)), (3300, Tick())], None),
        (machine(idle_timeout=600, has_sensor=True, hard_limit=7200), [(0, tap(ADA))], mono(600)),
        (machine(idle_timeout=600, has_sensor=True), [(0, tap(ADA)), (100, Running(True))], None),
        (machine(idle_timeout=600, has_sensor=False), [(0, tap(ADA))], None),
        (machine(hard_limit=100, max_session=3600, warn_before=300), [(0, tap(ADA))], mono(100)),
        (RUN_ON, [(0, tap(ADA)), (10, tap(ADA))], mono(70)),
        (MIN_OFF, [(0, tap(ADA)), (10, tap(ADA)), (11, tap(BOB))], mono(15)),
    ],
)
def test_session_next_wakeup(m, events, expected):
    state, _ = run(events, m)
    assert next_wakeup(state, m) == expected


@pytest.mark.parametrize("m", [MAX, SENSED, IDLE, RUN_ON, MIN_OFF], ids=["max", "sensed", "idle", "run_on", "min_off"])
def test_session_ticks_before_next_wakeup_change_nothing(m):
    state, _ = run([(0, tap(ADA)), (1, tap(ADA)), (2, tap(BOB))], m)
    for _ in range(10):
        wake = next_wakeup(state, m)
        if wake is None:
            break
        before = wake - 0.001 - MONO0
        quiet = handle(state, Tick(), at(before), m)
        assert quiet.actions == () and quiet.state == state
        step = handle(state, Tick(), at(wake - MONO0), m)
        assert step.actions != () or step.state != state
        state = step.state


# --- property test ----------------------------------------------------------------------------

# Members who may use the machine weigh most, so sessions happen often.
TRAINER = Member(id="m-trainer", name="Tess", status="active", roles=frozenset({"trainer:laser"}),
                 inductions={"laser": None}, badges=("04AAAA01",))
LAPSED = person("m-lapsed", "04020202", inductions={"laser": dt.date(2026, 1, 1)})
CAST = [ADA, ADA, ADA, BOB, BOB, STAFF, SUSPENDED, UNINDUCTED, UNINDUCTED, STAFF_UNINDUCTED, None, None,
        TRAINER, TRAINER, TRAINER, LAPSED]
TIMINGS = st.builds(
    dict,
    max_session=st.sampled_from([None, 60.0, 600.0]),
    warn_before=st.sampled_from([10.0, 30.0]),
    hard_limit=st.sampled_from([None, 900.0]),
    idle_timeout=st.sampled_from([None, 120.0]),
    min_off=st.sampled_from([0.0, 20.0]),
    run_on=st.sampled_from([0.0, 45.0]),
    has_sensor=st.booleans(),
    induction_valid=st.sampled_from([None, 86400.0]),
    report_hold=st.sampled_from([2.0, 5.0]),
)
TAPS = st.builds(
    lambda who, alt, stale, trusted, authentic: Tap(
        ADA_PHONE if alt and who is ADA else (who.badges[0] if who else UNKNOWN), who, stale, trusted,
        authentic=authentic),
    st.sampled_from(CAST), st.booleans(), st.sampled_from([False] * 7 + [True]), st.sampled_from([True] * 7 + [False]),
    st.sampled_from([True] * 7 + [False]),  # secure cards: now and then a clone of the badge
)
OTHERS = {
    "tick": st.just(Tick()),
    "lock": st.builds(Lock, st.just("tech"), st.just("r"), st.booleans()),
    "unlock": st.builds(Unlock, st.just("tech")),
    "end": st.builds(EndSession, st.just("tech")),
    "running": st.builds(Running, st.booleans()),
    # at the machine; a list is ("list", fresh): generated now (retiring every grant) or long ago
    "enrol": st.builds(Enrol, st.sampled_from(["m-ada", "m-new"]), st.just("tech"), st.sampled_from([True, True, False])),
    "button": st.builds(ReportButton, st.booleans(), st.none() | st.builds(LastTap, st.sampled_from(
        ["m-ada", "m-bob", None]), st.sampled_from([MONO0, MONO0 + 600.0]))),
    "bypass": st.builds(BypassKey, st.booleans()),
    "list": st.tuples(st.just("list"), st.booleans()),
}
# Taps and ticks weigh most; unlocks outweigh locks (the button locks too), so the machine is not
# locked most of the time.
KINDS = (["tap"] * 10 + ["tick"] * 4 + ["running"] * 2 + ["lock", "unlock", "unlock", "end"]
         + ["enrol", "enrol", "button", "bypass", "list"])
INPUTS = st.sampled_from(KINDS).flatmap(lambda kind: TAPS if kind == "tap" else OTHERS[kind])
SEQUENCES = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 2.0, 5.0, 15.0, 25.0, 50.0, 70.0, 400.0]), INPUTS),
                     max_size=60)


def _check_step(before: State, step: Step, physical: bool, open_session: str | None) -> tuple[bool, str | None]:
    state = step.state
    # the relay is on only with a session or a pending run-on
    if state.relay:
        assert state.session is not None or state.run_on_until is not None, state
    # a session whose relay is off is waiting for min_off
    if state.session is not None and not state.relay:
        assert state.relay_on_at is not None, state
    if state.run_on_until is not None:
        assert state.session is None and state.relay
    # a refusal never switches the relay on, and leaves the state alone
    if step.outcome is not None and step.outcome.action == "refused":
        assert Relay(True) not in step.actions
        assert state == before
    if step.outcome is not None:
        assert step.outcome.relay == state.relay
    # the actions switch the relay coherently and end where the state says
    for action in step.actions:
        if isinstance(action, Relay):
            assert action.on != physical, f"redundant {action} in {step.actions}"
            physical = action.on
    assert physical == state.relay
    # sessions pair up; the relay goes off before the ended record
    kinds = []
    for action in step.actions:
        if isinstance(action, Record):
            kinds.append(action.type)
            if action.type == "session_started":
                assert open_session is None, f"second start while {open_session} is open"
                open_session = action.fields["member_id"]
                assert state.session is not None and state.session.member_id == open_session
            elif action.type == "session_ended":
                assert open_session == action.fields["member_id"]
                assert action.fields["duration_s"] >= 0
                open_session = None
                ended_at = step.actions.index(action)
                assert not any(isinstance(a, Relay) and not a.on for a in step.actions[ended_at:])
        if isinstance(action, Relay) and action.on:
            # switched on by the start (after its record) or by a min_off tick (no record at all)
            assert kinds == ["session_started"] or not any(isinstance(a, Record) for a in step.actions)
    assert (open_session is None) == (state.session is None)
    return physical, open_session


class _Grants:
    """What the test knows of the machine's grants, apart from the session machine: the
    inductions it gave (member -> when) and the list version they were last held against."""

    def __init__(self) -> None:
        self.given: dict[str, dt.datetime] = {}
        self.version: int | None = None

    def entitled(self, member: Member, m: Machine, before: State, tap: Tap, local: dt.datetime) -> bool:
        if member.id in self.given:
            member = member._replace(inductions={**member.inductions, "laser": None})
        # an induction given here may carry an expiry; none of them ends within a test's sequence
        return decide(member, m.rules, tap.situation(before.locked), local).granted

    def new_list(self, version: int, generated: dt.datetime) -> None:
        if version != self.version:
            self.given = {k: ts for k, ts in self.given.items() if ts > generated}
            self.version = version


def _check_at_the_machine(before: State, event: object, step: Step, now: Instant, m: Machine, grants: _Grants) -> None:
    """Grants, enrolments, reports and the bypass key change the relay only as the rules say."""
    idle_tap = isinstance(event, Tap) and before.session is None and event.member is not None
    if idle_tap:  # on an idle machine a member starts a session exactly when entitled to
        entitled = grants.entitled(event.member, m, before, event, now.local(m.tz))
        assert (step.outcome.action == "started") == entitled, f"{event.member.id}: {step.outcome}"
    for action in step.actions:
        if not isinstance(action, Record):
            continue
        fields = action.fields
        if action.type == "session_started":
            assert isinstance(event, Tap) and grants.entitled(event.member, m, before, event, now.local(m.tz)), \
                f"{event} started a session it was not entitled to"
        elif action.type == "induction_granted":
            session = before.session
            assert isinstance(event, Tap) and session is not None and session.trainer, "induction without a trainer"
            assert fields["by"] == session.member_id != fields["member_id"] == event.member.id
            assert event.member.status == "active" and not before.locked
            assert not event.list_stale or event.member.is_staff  # staff are served on a stale list
            assert Relay(True) not in step.actions and step.state.session == session
            grants.given[fields["member_id"]] = now.wall
        elif action.type == "badge_enrolled":
            assert isinstance(event, Tap) and event.member is None
            assert before.enrolment is not None and now.mono < before.enrolment.until
            assert fields["member_id"] == before.enrolment.member_id
        elif action.type == "out_of_order_reported":
            assert before.report.sensed and now.mono - before.report.since >= m.report_hold
            assert fields["by"] == before.report.by
            assert step.state.locked and step.state.session is None
            assert before.session is None or not step.state.relay
        elif action.type in ("bypass_on", "bypass_off"):
            assert not any(isinstance(a, Relay) for a in step.actions)


def _run_property(timing: dict, sequence: list) -> None:
    has_sensor = timing.pop("has_sensor")
    valid, hold = timing.pop("induction_valid"), timing.pop("report_hold")
    m = Machine(Rules("laser"), Timing(**timing), dt.timezone.utc, has_sensor, valid, hold)
    state, clock, physical, open_session = State(), 0.0, False, None
    grants, versions = _Grants(), iter(range(2, 1000))
    for advance, event in sequence:
        clock += advance
        if isinstance(event, tuple):  # a member list, generated now or long ago
            event = NewList(next(versions), at(clock).wall if event[1] else T0 - dt.timedelta(days=30))
            grants.new_list(event.version, event.generated)
        step = handle(state, event, at(clock), m)
        physical, open_session = _check_step(state, step, physical, open_session)
        if isinstance(event, Tap) and not event.authentic:  # a card that did not authenticate changes nothing
            assert step.outcome.reason == "card_not_authentic" and step.state == state
        _check_at_the_machine(state, event, step, at(clock), m, grants)
        state = step.state
        # a Tick before the next wakeup changes nothing
        wake = next_wakeup(state, m)
        if wake is None or wake > mono(clock):
            quiet = handle(state, Tick(), at(clock), m)
            assert quiet.actions == () and quiet.state == state
    clock += 1
    step = handle(state, Shutdown(), at(clock), m)
    physical, open_session = _check_step(state, step, physical, open_session)
    assert open_session is None and not physical and not step.state.relay
    assert step.state.session is None


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(TIMINGS, SEQUENCES)
def test_session_property_invariants(timing, sequence):
    _run_property(timing, sequence)


# The same invariants with the inputs at the machine weighing most: trainers and the members
# they induct, unknown badges during enrolments, the button and the bypass key, lists.
TRAINING_TAPS = st.builds(
    lambda who, stale: Tap(who.badges[0] if who else UNKNOWN, who, stale),
    st.sampled_from([TRAINER, TRAINER, UNINDUCTED, LAPSED, STAFF_UNINDUCTED, SUSPENDED, BOB, None, None]),
    st.sampled_from([False] * 7 + [True]),
)
TRAINING_KINDS = ["tap"] * 8 + ["tick"] * 4 + ["enrol", "enrol", "button", "button", "bypass", "bypass", "list", "list",
                                              "lock", "unlock", "unlock"]
TRAINING = st.sampled_from(TRAINING_KINDS).flatmap(lambda kind: TRAINING_TAPS if kind == "tap" else OTHERS[kind])
TRAINING_SEQUENCES = st.lists(st.tuples(st.sampled_from([0.0, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0, 70.0]), TRAINING),
                              max_size=60)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(TIMINGS, TRAINING_SEQUENCES)
def test_session_property_invariants_at_the_machine(timing, sequence):
    _run_property(timing, sequence)


# --- secure cards ------------------------------------------------------------------------------


def forged(who: Member | None, badge: str | None = None) -> Tap:
    """A tap of a card that did not authenticate (a UID clone of `who`'s badge)."""
    return Tap(badge or (who.badges[0] if who else UNKNOWN), who, authentic=False)


@pytest.mark.parametrize("state", [State(), started(), started(who=STAFF), State(locked=True)],
                         ids=["idle", "in-use", "staff-session", "locked"])
@pytest.mark.parametrize("who", [ADA, STAFF, BOB, None], ids=["holder", "staff", "other", "unknown"])
def test_session_a_card_that_did_not_authenticate_changes_nothing(state, who):
    """Not a start, not an end (a clone of the holder's badge does not switch their
    machine off), not an extension: the refusal card_not_authentic, relay untouched."""
    step = handle(state, forged(who), at(5), PLAIN)
    assert step.state == state
    fields = {"badge": forged(who).badge, "reason": "card_not_authentic"}
    if who is not None:
        fields["member_id"] = who.id
    assert step.actions == (Record("access_denied", fields), Indicate(Signal.REFUSED))
    assert step.outcome == Outcome("refused", "card_not_authentic", state.relay, who.id if who else None)


def test_session_a_card_that_did_not_authenticate_does_not_extend():
    m = machine(max_session=60.0, warn_before=10.0)
    state, _ = run([(0, tap(ADA)), (55, Tick())], m)
    assert state.session.warned
    step = handle(state, forged(ADA), at(56), m)
    assert step.outcome.reason == "card_not_authentic" and step.state == state


def test_session_a_badge_accepted_by_uid_says_so_in_its_events():
    """A `uid:` badge on a secure reader: accepted without authentication, and every
    event of its taps carries "secure": false."""
    by_uid = Tap(ADA.badges[0], ADA, by_uid=True)
    step = handle(State(), by_uid, at(0), PLAIN)
    assert records(step) == [("session_started", {"member_id": "m-ada", "badge": "04A1B2C3", "secure": False})]
    m = machine(max_session=60.0, warn_before=10.0)
    state, _ = run([(0, by_uid), (55, Tick())], m)
    step = handle(state, by_uid, at(56), m)
    assert records(step) == [("session_extended", {"member_id": "m-ada", "badge": "04A1B2C3", "secure": False})]
    step = handle(State(locked=True), by_uid, at(0), PLAIN)
    assert records(step) == [("access_denied", {"badge": "04A1B2C3", "reason": "machine_locked",
                                                "member_id": "m-ada", "secure": False})]
    assert "secure" not in records(handle(State(), tap(ADA), at(0), PLAIN))[0][1]
