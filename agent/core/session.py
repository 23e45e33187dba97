"""The machine's session state machine: pure, `handle(state, input, now)` -> a Step.

The daemon carries out a step's actions in order (so every path to the relay
is in one place) and feeds it taps, clock ticks, commands and the
machine-running sensor. Durations and deadlines use the monotonic clock;
wall-clock time is only stamped on events and used for dates and hours.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from agent.core.grants import BadgeGrant, Grants, InductionGrant
from agent.core.model import (
    EndReason,
    EnrolRefusal,
    EventType,
    Instant,
    Member,
    Reason,
    Signal,
)
from agent.core.policy import Rules, Situation, decide, may_end_others, may_train

# at the machine
ENROL_WINDOW = 60.0  # an enrolment binds the next unknown badge tapped within this many seconds
REPORTER_WINDOW = 300.0  # a report names the member of the machine's last tap within this many seconds
BYPASS_SETTLE = 0.5  # a bypass key change counts once it has held this many seconds
REPORT_BUTTON = "report button"  # who locks a machine reported out of order


@dataclass(frozen=True, slots=True)
class Timing:
    """Session limits from the config; all in seconds, None when off."""

    max_session: float | None = None
    warn_before: float = 300.0
    hard_limit: float | None = None
    idle_timeout: float | None = None
    min_off: float = 0.0
    run_on: float = 0.0


@dataclass(frozen=True, slots=True)
class Session:
    member_id: str
    badge: str
    staff: bool
    started: dt.datetime
    started_mono: float
    deadline: float | None = None  # monotonic; max_session
    warned: bool = False
    name: str = ""
    # The member, as the list in force gives them, when they train this machine's induction:
    # re-judged at each induction they give (policy.may_train), and replaced by each list.
    trainer: Member | None = None


# at the machine

@dataclass(frozen=True, slots=True)
class Enrolment:
    """An open enrolment: the next unknown badge tapped before `until` (monotonic) is bound to `member_id`."""

    member_id: str
    by: str
    until: float


@dataclass(frozen=True, slots=True)
class LastTap:
    """The machine's last tap, as the agent notes it: its member (None when unknown or the
    card did not authenticate) and when (monotonic)."""

    member_id: str | None
    mono: float


def reporter(last: LastTap | None, mono: float) -> str | None:
    """Who an out-of-order report made at `mono` names: the member of the machine's last
    tap within REPORTER_WINDOW, or nobody."""
    return last.member_id if last is not None and mono - last.mono <= REPORTER_WINDOW else None


@dataclass(frozen=True, slots=True)
class Debounced:
    """A contact input as the machine takes it: `on` follows what is sensed only once
    that has held for the input's settle time, so bounces and glitches change nothing."""

    on: bool = False
    sensed: bool = False
    since: float = float("-inf")  # monotonic: when `sensed` last changed

    def sense(self, value: bool, mono: float) -> Debounced:
        return self if value == self.sensed else replace(self, sensed=value, since=mono)

    def due(self, settle: float) -> float | None:
        """When `on` will follow what is sensed, or None while they agree."""
        return self.since + settle if self.sensed != self.on else None

    def settled(self, settle: float, mono: float) -> bool:
        due = self.due(settle)
        return due is not None and mono >= due


@dataclass(frozen=True, slots=True)
class Press(Debounced):
    """The out-of-order button: `by` is who the report names, as of the press."""

    by: str | None = None


@dataclass(frozen=True, slots=True)
class AtMachine:
    """What the machine keeps besides its sessions, in one field of State, so that the
    copies a tap makes of State stay as cheap as they were."""

    grants: Grants = Grants()
    enrolment: Enrolment | None = None
    report: Press = Press()  # the out-of-order button: on = held long enough
    bypass: Debounced = Debounced()  # the bypass key switch: on = closed


@dataclass(frozen=True, slots=True)
class State:
    session: Session | None = None
    locked: bool = False
    relay: bool = False
    relay_on_at: float | None = None  # min_off: the relay goes on at this monotonic time
    run_on_until: float | None = None  # run-on: the relay goes off at this monotonic time
    last_off: float = float("-inf")
    running: bool = False
    idle_since: float | None = None
    since: dt.datetime | None = None
    previous_member: str | None = None
    at_machine: AtMachine = AtMachine()

    @property
    def grants(self) -> Grants:
        return self.at_machine.grants

    @property
    def enrolment(self) -> Enrolment | None:
        return self.at_machine.enrolment

    @property
    def report(self) -> Press:
        return self.at_machine.report

    @property
    def bypass(self) -> Debounced:
        return self.at_machine.bypass

    @property
    def label(self) -> str:
        if self.session is not None:
            return "in_use"
        return "locked" if self.locked else "idle"


# Inputs


@dataclass(frozen=True, slots=True)
class Tap:
    badge: str
    member: Member | None
    list_stale: bool = False
    clock_trusted: bool = True
    # secure cards: the card failed its authentication (refused, whoever holds the badge);
    # or it was accepted by its UID alone (a `uid:` badge), which its events say
    authentic: bool = True
    by_uid: bool = False

    def situation(self, locked: bool = False, in_use_by_other: bool = False) -> Situation:
        return Situation(locked, in_use_by_other, self.list_stale, self.clock_trusted, self.authentic)

    def card(self) -> dict[str, Any]:
        """What the events of this tap say about the card."""
        return {"secure": False} if self.by_uid else {}


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class Lock:
    by: str
    reason: str
    now: bool = False  # end a session in progress at once


@dataclass(frozen=True, slots=True)
class Unlock:
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EndSession:
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Running:
    running: bool


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


# at the machine

@dataclass(frozen=True, slots=True)
class Enrol:
    """`members enrol`: bind the next unknown badge to `member_id`; `known` when the list has that member."""

    member_id: str
    by: str
    known: bool


@dataclass(frozen=True, slots=True)
class ReportButton:
    """The out-of-order button changed; `last_tap` is the machine's last tap (the agent
    notes it, so that a tap costs no change of state)."""

    pressed: bool
    last_tap: LastTap | None = None


@dataclass(frozen=True, slots=True)
class BypassKey:
    closed: bool


@dataclass(frozen=True, slots=True)
class NewList:
    """A member list in force: `generated` is its generated_at, or when this machine took a list
    without one. `holder` is the open session's trainer as this list gives them (None: no
    session, a session whose member trains nobody here, or the list no longer has them)."""

    version: int | None
    generated: dt.datetime
    holder: Member | None = None


Input = Tap | Tick | Lock | Unlock | EndSession | Running | Shutdown | Enrol | ReportButton | BypassKey | NewList

# Actions


@dataclass(frozen=True, slots=True)
class Relay:
    on: bool


@dataclass(frozen=True, slots=True)
class Record:
    type: EventType
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Indicate:
    signal: Signal


Action = Relay | Record | Indicate


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a tap, as `fabpass tap --json` prints it."""

    action: str  # started | ended | extended | refused | inducted | enrolled
    reason: str | None
    relay: bool
    member_id: str | None

    @property
    def granted(self) -> bool:
        return self.action != "refused"

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "granted": self.granted, "reason": self.reason,
                "relay": self.relay, "member_id": self.member_id}


@dataclass(frozen=True, slots=True)
class Step:
    state: State
    actions: tuple[Action, ...] = ()
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class Machine:
    """What the state machine needs to know about its machine."""

    rules: Rules
    timing: Timing = Timing()
    tz: dt.tzinfo | None = None
    has_sensor: bool = False
    # at the machine
    induction_valid: float | None = None  # seconds an induction given here lasts; None: no expiry
    report_hold: float = 2.0  # seconds the out-of-order button must be held


def handle(state: State, event: Input, now: Instant, machine: Machine) -> Step:
    if isinstance(event, Tap):
        return _tap(state, event, now, machine)
    if isinstance(event, Tick):
        return _tick(state, now, machine)
    if isinstance(event, Lock):
        locked = _relabel(replace(state, locked=True), state, now)
        step = Step(locked, (Record(EventType.MACHINE_LOCKED, {"by": event.by, "reason": event.reason}),))
        if event.now and state.session is not None:
            return _then(step, _end(locked, now, machine, EndReason.REMOTE, {"by": event.by}))
        return step
    if isinstance(event, Unlock):
        unlocked = _relabel(replace(state, locked=False), state, now)
        return Step(unlocked, (Record(EventType.MACHINE_UNLOCKED, {"by": event.by, "reason": event.reason}),))
    if isinstance(event, EndSession):
        if state.session is None:
            return Step(state)
        return _end(state, now, machine, EndReason.REMOTE, {"by": event.by})
    if isinstance(event, Running):
        idle_since = None if event.running or state.session is None else (
            state.idle_since if not state.running and state.idle_since is not None else now.mono)
        return _tick(replace(state, running=event.running, idle_since=idle_since), now, machine)
    if isinstance(event, Shutdown):
        if state.session is not None:
            return _end(state, now, machine, EndReason.SHUTDOWN, run_on=False)
        off = replace(state, relay=False, run_on_until=None)
        return Step(off, (Relay(False),) if state.relay else ())
    if isinstance(event, Enrol):
        return _open_enrolment(state, event, now)
    if isinstance(event, ReportButton):
        report = state.report.sense(event.pressed, now.mono)
        if event.pressed and report is not state.report:
            report = replace(report, by=reporter(event.last_tap, now.mono))
        return _tick(_at(state, report=report), now, machine)
    if isinstance(event, BypassKey):
        return _tick(_at(state, bypass=state.bypass.sense(event.closed, now.mono)), now, machine)
    if isinstance(event, NewList):
        held = _at(state, grants=state.grants.held_against(event.version, event.generated))
        session = state.session
        if session is not None and session.trainer is not None:
            holder = event.holder if event.holder is not None and event.holder.id == session.member_id else None
            trainer = holder if holder is not None and holder.trains(machine.rules.induction) else None
            held = replace(held, session=replace(session, trainer=trainer))
        return Step(held)
    raise TypeError(f"unknown input {event!r}")


def _then(first: Step, second: Step) -> Step:
    return Step(second.state, first.actions + second.actions, second.outcome or first.outcome)


def _relabel(new: State, old: State, now: Instant) -> State:
    return replace(new, since=now.wall) if new.label != old.label or old.since is None else new


def _refuse(state: State, tap: Tap, reason: Reason) -> Step:
    member_id = tap.member.id if tap.member else None
    fields: dict[str, Any] = {"badge": tap.badge, "reason": reason.value}
    if member_id:
        fields["member_id"] = member_id
    fields.update(tap.card())
    return Step(state, (Record(EventType.ACCESS_DENIED, fields), Indicate(Signal.REFUSED)),
                Outcome("refused", reason.value, state.relay, member_id))


def _tap(state: State, tap: Tap, now: Instant, machine: Machine) -> Step:
    member = state.grants.overlay(tap.member)
    if member is not tap.member:
        tap = replace(tap, member=member)
    enrolment = state.enrolment
    if enrolment is not None and now.mono < enrolment.until:
        if member is None:
            # Never the badge of the session in progress (its tap ends it, whatever the list
            # says), nor a card that failed its authentication (secure cards).
            holds = state.session is not None and tap.badge == state.session.badge
            return _enrol(state, tap, now) if tap.authentic and not holds else _serve(state, tap, now, machine)
        # Not a badge to enrol: served as any tap, and the enrolment stays open, saying why.
        step = _serve(state, tap, now, machine)
        refused = Record(EventType.ENROLMENT_REFUSED, {
            "member_id": enrolment.member_id, "badge": tap.badge, "by": enrolment.by,
            "reason": EnrolRefusal.BADGE_KNOWN.value, "owner": member.id})
        return replace(step, actions=step.actions + (refused,))
    return _serve(state, tap, now, machine)


def _serve(state: State, tap: Tap, now: Instant, machine: Machine) -> Step:
    """A tap as the rules answer it: start, end, extend, induct or refuse."""
    session, member = state.session, tap.member
    local = now.local(machine.tz)
    holder = session is not None and (
        (member is not None and member.id == session.member_id) or tap.badge == session.badge)
    if session is None:
        decision = decide(member, machine.rules, tap.situation(state.locked), local)
        if not decision.granted:
            return _refuse(state, tap, decision.reason)
        return _start(state, tap, now, machine)
    if holder and tap.authentic:
        if session.warned:
            return _extend(state, tap, now, machine, local)
        return _end(state, now, machine, EndReason.BADGE_OFF)
    if session.trainer is not None:
        inducted = _induct(state, tap, now, machine, local)
        if inducted is not None:
            return inducted
    # Someone else's session: staff end it, everyone else is refused.
    if member is not None and member.is_staff:
        decision = may_end_others(member, tap.situation(), local)
    else:
        decision = decide(member, machine.rules, tap.situation(state.locked, True), local)
    if not decision.granted:
        return _refuse(state, tap, decision.reason)
    step = _end(state, now, machine, EndReason.STAFF, {"by": member.id})
    return replace(step, outcome=replace(step.outcome, member_id=member.id))


def _start(state: State, tap: Tap, now: Instant, machine: Machine) -> Step:
    member = tap.member
    assert member is not None
    timing = machine.timing
    session = Session(
        member_id=member.id, badge=tap.badge, staff=member.is_staff,
        started=now.wall, started_mono=now.mono,
        deadline=now.mono + timing.max_session if timing.max_session else None,
        name=member.name, trainer=member if member.trains(machine.rules.induction) else None,
    )
    ready = state.last_off + timing.min_off
    relay_now = state.relay or now.mono >= ready
    new = _relabel(replace(
        state, session=session, relay=relay_now, relay_on_at=None if relay_now else ready,
        run_on_until=None, idle_since=None if state.running else now.mono,
    ), state, now)
    actions: list[Action] = [Record(EventType.SESSION_STARTED, {"member_id": member.id, "badge": tap.badge,
                                                                 **tap.card()})]
    if relay_now and not state.relay:
        actions.append(Relay(True))
    actions.append(Indicate(Signal.GRANTED))
    return Step(new, tuple(actions), Outcome("started", None, relay_now, member.id))


def _extend(state: State, tap: Tap, now: Instant, machine: Machine, local: dt.datetime) -> Step:
    """The holder's tap in the warning window asks for more time. Where it may not be
    had (locked meanwhile, membership lapsed), the tap ends the session instead: the
    holder must always be able to switch the machine off with their badge."""
    decision = decide(tap.member, machine.rules, tap.situation(state.locked), local)
    if not decision.granted:
        return _end(state, now, machine, EndReason.BADGE_OFF, {"extension_refused": decision.reason.value})
    session = state.session
    assert session is not None and machine.timing.max_session is not None
    extended = replace(session, deadline=now.mono + machine.timing.max_session, warned=False)
    return Step(
        replace(state, session=extended),
        (Record(EventType.SESSION_EXTENDED, {"member_id": session.member_id, "badge": tap.badge, **tap.card()}),
         Indicate(Signal.GRANTED)),
        Outcome("extended", None, state.relay, session.member_id),
    )


def _end(state: State, now: Instant, machine: Machine, reason: EndReason,
         extra: dict[str, Any] | None = None, run_on: bool = True, signal: Signal | None = Signal.ENDED) -> Step:
    """End the session: the relay goes off first (no I/O before it), then the event."""
    session = state.session
    assert session is not None
    keep_on = run_on and machine.timing.run_on > 0 and state.relay
    new = _relabel(replace(
        state, session=None, relay=keep_on, relay_on_at=None,
        run_on_until=now.mono + machine.timing.run_on if keep_on else None,
        last_off=state.last_off if keep_on or not state.relay else now.mono,
        previous_member=session.member_id, idle_since=None,
    ), state, now)
    actions: list[Action] = []
    if state.relay and not keep_on:
        actions.append(Relay(False))
    duration = round(max(0.0, now.mono - session.started_mono), 3)
    fields = {"member_id": session.member_id, "duration_s": duration, "reason": reason.value, **(extra or {})}
    actions.append(Record(EventType.SESSION_ENDED, fields))
    if signal is not None:
        actions.append(Indicate(signal))
    return Step(new, tuple(actions), Outcome("ended", None, keep_on, session.member_id))


def _tick(state: State, now: Instant, machine: Machine) -> Step:
    at_the_machine = _tick_at_the_machine(state, now, machine)
    if at_the_machine is not None:
        return at_the_machine
    timing, session = machine.timing, state.session
    if state.run_on_until is not None and now.mono >= state.run_on_until and session is None:
        return Step(replace(state, relay=False, run_on_until=None, last_off=now.mono), (Relay(False),))
    if session is None:
        return Step(state)
    if state.relay_on_at is not None and now.mono >= state.relay_on_at:
        return Step(replace(state, relay=True, relay_on_at=None), (Relay(True),))
    elapsed = now.mono - session.started_mono
    if timing.hard_limit is not None and elapsed >= timing.hard_limit:
        return _end(state, now, machine, EndReason.TIMEOUT)
    if (timing.idle_timeout is not None and machine.has_sensor and state.idle_since is not None
            and now.mono - state.idle_since >= timing.idle_timeout):
        return _end(state, now, machine, EndReason.IDLE)
    if session.deadline is not None:
        # A running machine is never cut by max_session: only hard_limit does that.
        if now.mono >= session.deadline and not (machine.has_sensor and state.running):
            return _end(state, now, machine, EndReason.TIMEOUT)
        if not session.warned and now.mono >= session.deadline - timing.warn_before:
            return Step(replace(state, session=replace(session, warned=True)), (Indicate(Signal.WARNING),))
    return Step(state)


def next_wakeup(state: State, machine: Machine) -> float | None:
    """The next monotonic time at which a Tick could change something, or None."""
    timing, session = machine.timing, state.session
    times = [state.run_on_until, state.relay_on_at, state.report.due(machine.report_hold),
             state.bypass.due(BYPASS_SETTLE), state.enrolment.until if state.enrolment else None]
    if session is not None:
        if timing.hard_limit is not None:
            times.append(session.started_mono + timing.hard_limit)
        if timing.idle_timeout is not None and machine.has_sensor and state.idle_since is not None:
            times.append(state.idle_since + timing.idle_timeout)
        if session.deadline is not None and not session.warned:
            times.append(session.deadline - timing.warn_before)
        elif session.deadline is not None and not (machine.has_sensor and state.running):
            times.append(session.deadline)
    pending = [t for t in times if t is not None]
    return min(pending) if pending else None


# -- at the machine: enrolment, trainers' inductions, the out-of-order button, the bypass key ----

def _at(state: State, **changes: Any) -> State:
    """`state` with these fields of its AtMachine changed."""
    return replace(state, at_machine=replace(state.at_machine, **changes))


def _open_enrolment(state: State, enrol: Enrol, now: Instant) -> Step:
    """Open the enrolment window for a member the list knows (a newer enrolment replaces it)."""
    if not enrol.known:
        return Step(state, (Record(EventType.ENROLMENT_REFUSED, {
            "member_id": enrol.member_id, "by": enrol.by, "reason": EnrolRefusal.UNKNOWN_MEMBER.value}),))
    return Step(_at(state, enrolment=Enrolment(enrol.member_id, enrol.by, now.mono + ENROL_WINDOW)))


def _enrol(state: State, tap: Tap, now: Instant) -> Step:
    """An unknown badge tapped while an enrolment is open: it is bound to the member."""
    enrolment = state.enrolment
    assert enrolment is not None and tap.member is None
    if not tap.clock_trusted:  # a grant is held against lists by its date: a wrong clock would keep it
        return _refuse(state, tap, Reason.CLOCK_UNSYNCHRONISED)
    fields: dict[str, Any] = {"member_id": enrolment.member_id, "badge": tap.badge, "by": enrolment.by}
    grant = BadgeGrant(tap.badge, enrolment.member_id, enrolment.by, now.wall)
    enrolled = _at(state, enrolment=None, grants=state.grants.with_badge(grant))
    return Step(enrolled, (Record(EventType.BADGE_ENROLLED, fields), Indicate(Signal.ENROLLED)),
                Outcome("enrolled", None, state.relay, enrolment.member_id))


# The refusals that a trainer's induction answers; any other keeps its own answer.
_TRAINABLE = (Reason.NOT_INDUCTED, Reason.INDUCTION_EXPIRED)


def _induct(state: State, tap: Tap, now: Instant, machine: Machine, local: dt.datetime) -> Step | None:
    """During a trainer's session, a member who lacks this machine's induction (or whose
    induction expired) is given it; None when the tap is not one for an induction.
    Never past a lock, a suspension or a lapsed membership, never to the trainer, never
    by a trainer whose own membership or role has lapsed since their session began."""
    session, member = state.session, tap.member
    assert session is not None and session.trainer is not None
    if member is None or member.id == session.member_id:
        return None
    situation = tap.situation(state.locked, True)
    induction = machine.rules.induction
    if decide(member, machine.rules, situation, local).reason not in _TRAINABLE:
        return None
    training = may_train(session.trainer, induction, situation, local)
    if not training.granted:  # served as any tap, unless only the clock stands in the way
        return _refuse(state, tap, training.reason) if training.reason is Reason.CLOCK_UNSYNCHRONISED else None
    if state.locked:
        return _refuse(state, tap, Reason.MACHINE_LOCKED)
    if not tap.clock_trusted:  # the grant, and its expiry, would be dated by a clock that may be wrong
        return _refuse(state, tap, Reason.CLOCK_UNSYNCHRONISED)
    expires = None
    if machine.induction_valid is not None:
        expires = (local + dt.timedelta(seconds=machine.induction_valid)).date()
    grant = InductionGrant(member.id, induction, session.member_id, expires, now.wall)
    fields = {"member_id": member.id, "induction": induction, "by": session.member_id,
              "expires": expires.isoformat() if expires else None, **tap.card()}
    return Step(_at(state, grants=state.grants.with_induction(grant)),
                (Record(EventType.INDUCTION_GRANTED, fields), Indicate(Signal.INDUCTED)),
                Outcome("inducted", None, state.relay, member.id))


def _tick_at_the_machine(state: State, now: Instant, machine: Machine) -> Step | None:
    """What the inputs and the enrolment window make due at a Tick, or None."""
    if state.report.settled(machine.report_hold, now.mono):
        held = _at(state, report=replace(state.report, on=state.report.sensed))
        return _out_of_order(held, now, machine) if held.report.on else Step(held)
    if state.bypass.settled(BYPASS_SETTLE, now.mono):
        on = state.bypass.sensed
        return Step(_at(state, bypass=replace(state.bypass, on=on)),
                    (Record(EventType.BYPASS_ON if on else EventType.BYPASS_OFF, {}),))
    enrolment = state.enrolment
    if enrolment is not None and now.mono >= enrolment.until:
        return Step(_at(state, enrolment=None), (Record(EventType.ENROLMENT_REFUSED, {
            "member_id": enrolment.member_id, "by": enrolment.by, "reason": EnrolRefusal.WINDOW_CLOSED.value}),))
    return None


def _out_of_order(state: State, now: Instant, machine: Machine) -> Step:
    """The button held: a session ends at once and the relay goes off (a run-on in
    progress too), the machine is locked (staff may still use it; unlock clears it), and
    the report names the member of the machine's last tap before the press (reporter)."""
    by = state.report.by
    step = Step(state)
    if state.session is not None:
        step = _end(state, now, machine, EndReason.OUT_OF_ORDER, run_on=False, signal=None)
    elif state.run_on_until is not None:
        step = Step(replace(state, relay=False, run_on_until=None, last_off=now.mono), (Relay(False),))
    actions = list(step.actions)
    new = step.state
    if not new.locked:
        new = _relabel(replace(new, locked=True), step.state, now)
        actions.append(Record(EventType.MACHINE_LOCKED, {"by": REPORT_BUTTON, "reason": EndReason.OUT_OF_ORDER.value}))
    actions += [Record(EventType.OUT_OF_ORDER_REPORTED, {"by": by}), Indicate(Signal.OUT_OF_ORDER)]
    return Step(new, tuple(actions))
