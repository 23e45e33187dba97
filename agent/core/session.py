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

from agent.core.model import EndReason, EventType, Instant, Member, Reason, Signal
from agent.core.policy import Rules, Situation, decide, may_end_others


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


Input = Tap | Tick | Lock | Unlock | EndSession | Running | Shutdown

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

    action: str  # started | ended | extended | refused
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
    session, member = state.session, tap.member
    local = now.local(machine.tz)
    if session is None:
        decision = decide(member, machine.rules, tap.situation(state.locked), local)
        if not decision.granted:
            return _refuse(state, tap, decision.reason)
        return _start(state, tap, now, machine)
    holder = (member is not None and member.id == session.member_id) or tap.badge == session.badge
    if holder and tap.authentic:
        if session.warned:
            return _extend(state, tap, now, machine, local)
        return _end(state, now, machine, EndReason.BADGE_OFF)
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
         extra: dict[str, Any] | None = None, run_on: bool = True) -> Step:
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
    actions += [Record(EventType.SESSION_ENDED, fields), Indicate(Signal.ENDED)]
    return Step(new, tuple(actions), Outcome("ended", None, keep_on, session.member_id))


def _tick(state: State, now: Instant, machine: Machine) -> Step:
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
    times = [state.run_on_until, state.relay_on_at]
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
