"""agent.core.session at the machine: trainers' inductions, enrolment, the out-of-order
button and the bypass key, driven with explicit instants (no clock, no mocks)."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.core.model import Member, Signal
from agent.core.session import (
    BYPASS_SETTLE,
    ENROL_WINDOW,
    REPORT_BUTTON,
    REPORTER_WINDOW,
    BypassKey,
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
    State,
    Tap,
    Tick,
    Timing,
    Unlock,
    handle,
    next_wakeup,
    reporter,
)
from tests.unit.test_session import (
    ADA,
    BOB,
    PLAIN,
    STAFF,
    STAFF_UNINDUCTED,
    SUSPENDED,
    UNINDUCTED,
    at,
    machine,
    mono,
    person,
    records,
    relays,
    run,
    tap,
)

TRAINER = Member(id="m-trainer", name="Tess", status="active", roles=frozenset({"trainer:laser"}),
                 inductions={"laser": None}, badges=("04AAAA01",))
STAFF_TRAINER = TRAINER._replace(id="m-staff-trainer", roles=frozenset({"trainer:laser", "staff"}),
                                 badges=("04AAAA02",))
CNC_TRAINER = TRAINER._replace(id="m-cnc-trainer", roles=frozenset({"trainer:cnc"}), badges=("04AAAA03",))
LAPSED = person("m-lapsed", "04020202", inductions={"laser": dt.date(2026, 1, 1)})
EXPIRED_MEMBER = person("m-old", "04010101", expires=dt.date(2026, 11, 24), inductions={})


def training(m: Machine = PLAIN, who: Member = TRAINER, state: State | None = None) -> State:
    state, _ = run([(0, tap(who))], m, state)
    assert state.session is not None and state.session.trainer
    return state


# --- trainers' inductions -------------------------------------------------------------------------

def test_induction_a_trainers_session_gives_the_induction_to_a_member_who_lacks_it():
    state = training()
    step = handle(state, tap(UNINDUCTED), at(60), PLAIN)
    assert step.actions == (Record("induction_granted", {"member_id": "m-new", "induction": "laser",
                                                         "by": "m-trainer", "expires": None}),
                            Indicate(Signal.INDUCTED))
    assert step.outcome == Outcome("inducted", None, True, "m-new") and step.outcome.granted
    assert step.state.session == state.session and step.state.relay  # the trainer's session goes on
    # inducted: now the machine is simply in use, and free for them once the trainer is done
    assert handle(step.state, tap(UNINDUCTED), at(61), PLAIN).outcome.reason == "in_use"
    done = handle(step.state, tap(TRAINER), at(62), PLAIN).state
    assert handle(done, tap(UNINDUCTED), at(63), PLAIN).outcome.action == "started"


def test_induction_renews_an_expired_one_for_induction_valid():
    m = machine()
    m = Machine(m.rules, m.timing, m.tz, m.has_sensor, induction_valid=365 * 86400)
    step = handle(training(m), tap(LAPSED), at(60), m)
    assert records(step) == [("induction_granted", {"member_id": "m-lapsed", "induction": "laser",
                                                    "by": "m-trainer", "expires": "2027-11-25"})]
    assert step.state.grants.overlay(LAPSED).inductions["laser"] == dt.date(2027, 11, 25)


@pytest.mark.parametrize("who, reason", [
    (SUSPENDED._replace(inductions={}), "suspended"),
    (EXPIRED_MEMBER, "membership_expired"),
    (None, "unknown_badge"),
    (BOB, "in_use"),                                # already inducted
])
def test_induction_never_past_a_suspension_or_a_lapsed_membership(who, reason):
    state = training()
    step = handle(state, tap(who), at(60), PLAIN)
    assert step.outcome.reason == reason and not step.state.grants
    assert records(step)[0][0] == "access_denied"


def test_induction_never_past_a_stale_list():
    step = handle(training(), tap(UNINDUCTED, stale=True), at(60), PLAIN)
    assert step.outcome.reason == "stale_member_list" and not step.state.grants


def test_induction_never_on_a_locked_machine():
    locked, _ = run([(0, Lock("tech", "tube"))])
    state = training(who=STAFF_TRAINER, state=locked)  # staff may use a locked machine, and train
    step = handle(state, tap(UNINDUCTED), at(60), PLAIN)
    assert step.outcome.reason == "machine_locked" and not step.state.grants


def test_induction_a_trainer_never_inducts_themselves_their_tap_ends_the_session():
    step = handle(training(), tap(TRAINER), at(60), PLAIN)
    assert step.outcome.action == "ended" and not step.state.grants


def test_induction_only_the_induction_the_trainer_trains_for():
    # a cnc trainer, inducted on the laser, uses it: no laser inductions from them
    cnc_trainer = CNC_TRAINER._replace(inductions={"laser": None, "cnc": None})
    state, _ = run([(0, tap(cnc_trainer))])
    assert not state.session.trainer
    assert handle(state, tap(UNINDUCTED), at(60), PLAIN).outcome.reason == "not_inducted"


def test_induction_only_while_the_trainers_session_is_in_force():
    ended, _ = run([(0, tap(TRAINER)), (30, tap(TRAINER))])
    assert handle(ended, tap(UNINDUCTED), at(60), PLAIN).outcome.reason == "not_inducted"


def test_grants_need_a_trusted_clock_which_dates_them_against_lists():
    """A grant holds until a list generated after it: dated by a clock running ahead, it
    would outlive every list; so an untrusted clock grants nothing (the tap is refused,
    an enrolment stays open)."""
    dated = Machine(PLAIN.rules, PLAIN.timing, PLAIN.tz, induction_valid=86400)
    untrusted = Tap(UNINDUCTED.badges[0], UNINDUCTED, clock_trusted=False)
    for m in (dated, PLAIN):
        step = handle(training(m), untrusted, at(60), m)
        assert step.outcome.reason == "clock_unsynchronised" and not step.state.grants
    dated_trainer = training(who=TRAINER._replace(expires=dt.date(2027, 1, 1)))
    assert handle(dated_trainer, untrusted, at(60), PLAIN).outcome.reason == "clock_unsynchronised"
    step = handle(enrolling(), Tap("0A0045B352", None, clock_trusted=False), at(30), PLAIN)
    assert step.outcome.reason == "clock_unsynchronised" and not step.state.grants
    assert step.state.enrolment is not None


def test_induction_never_by_a_trainer_a_newer_list_suspends_or_unroles():
    state = training()
    for later in (TRAINER._replace(status="suspended"), TRAINER._replace(roles=frozenset()), None):
        held = handle(state, NewList(2, at(30).wall, later), at(30), PLAIN).state
        assert held.session is not None and held.relay  # the session itself goes on
        step = handle(held, tap(UNINDUCTED), at(60), PLAIN)
        assert step.outcome.reason == "not_inducted" and not step.state.grants
    # a list that still makes them a trainer keeps them one
    kept = handle(state, NewList(2, at(30).wall, TRAINER._replace(name="Tess B.")), at(30), PLAIN).state
    assert handle(kept, tap(UNINDUCTED), at(60), PLAIN).outcome.action == "inducted"


def test_induction_never_by_a_trainer_whose_membership_lapsed_during_the_session():
    ending = TRAINER._replace(expires=dt.date(2026, 11, 25))  # at(0) is 2026-11-25, 10:00 UTC
    state = training(who=ending)
    step = handle(state, tap(UNINDUCTED), at(24 * 3600), PLAIN)  # the next day, still in session
    assert step.outcome.action != "inducted" and not step.state.grants


def test_induction_a_staff_member_without_it_is_inducted_rather_than_ending_the_training():
    step = handle(training(), tap(STAFF_UNINDUCTED), at(60), PLAIN)
    assert step.outcome.action == "inducted" and step.state.session is not None
    # staff who hold the induction still end the session, as on any session
    assert handle(training(), tap(STAFF), at(60), PLAIN).outcome.action == "ended"


def test_induction_given_here_is_held_until_a_list_generated_after_it():
    given = handle(training(), tap(UNINDUCTED), at(60), PLAIN).state
    at_grant = at(60).wall
    older = handle(given, NewList(2, at_grant - dt.timedelta(hours=1)), at(61), PLAIN).state
    assert older.grants.overlay(UNINDUCTED).inductions.get("laser", "none") is None  # still given
    assert handle(older, NewList(2, at_grant + dt.timedelta(hours=1)), at(62), PLAIN).state == older  # same list
    newer = handle(older, NewList(3, at_grant + dt.timedelta(seconds=1)), at(62), PLAIN).state
    assert "laser" not in newer.grants.overlay(UNINDUCTED).inductions  # the list decides now


# --- enrolment ----------------------------------------------------------------------------------

def enrolling(state: State | None = None, seconds: float = 0) -> State:
    step = handle(state or State(), Enrol("m-ada", "giulia", known=True), at(seconds), PLAIN)
    assert step.actions == () and step.state.enrolment is not None
    return step.state


def test_enrolment_binds_the_next_unknown_badge_to_the_member():
    step = handle(enrolling(), tap(None, "0A0045B352"), at(30), PLAIN)
    assert step.actions == (Record("badge_enrolled", {"member_id": "m-ada", "badge": "0A0045B352", "by": "giulia"}),
                            Indicate(Signal.ENROLLED))
    assert step.outcome == Outcome("enrolled", None, False, "m-ada")
    assert step.state.enrolment is None and step.state.grants.member_id("0A0045B352") == "m-ada"
    assert not relays(step)
    # once: the next unknown badge is just unknown
    assert handle(step.state, tap(None, "0B0045B352"), at(31), PLAIN).outcome.reason == "unknown_badge"


def test_enrolment_of_a_member_the_list_does_not_know_is_refused():
    step = handle(State(), Enrol("m-nobody", "giulia", known=False), at(0), PLAIN)
    assert step.actions == (Record("enrolment_refused", {"member_id": "m-nobody", "by": "giulia",
                                                         "reason": "unknown_member"}),)
    assert step.state.enrolment is None


def test_enrolment_refuses_a_badge_already_in_the_list_which_is_served_as_usual():
    state = enrolling()
    step = handle(state, tap(BOB), at(10), PLAIN)
    assert step.actions[-1] == Record("enrolment_refused", {"member_id": "m-ada", "badge": BOB.badges[0],
                                                            "by": "giulia", "reason": "badge_known", "owner": "m-bob"})
    assert step.outcome == Outcome("started", None, True, "m-bob")  # Bob uses the machine, as any day
    assert step.state.enrolment == state.enrolment  # still open
    refused = handle(step.state, tap(SUSPENDED), at(11), PLAIN)
    assert [kind for kind, _ in records(refused)] == ["access_denied", "enrolment_refused"]
    assert handle(step.state, tap(None), at(20), PLAIN).outcome.action == "enrolled"


def test_enrolment_never_takes_the_badge_of_the_session_in_progress():
    # Ada's badge left the list during her session: her tap still ends it, and is not enrolled
    state = enrolling(run([(0, tap(ADA))])[0], seconds=1)
    step = handle(state, tap(None, ADA.badges[0]), at(10), PLAIN)
    assert step.outcome.action == "ended" and not step.state.grants


def test_enrolment_window_closes_after_60_s():
    state = enrolling()
    assert next_wakeup(state, PLAIN) == mono(ENROL_WINDOW)
    assert handle(state, Tick(), at(ENROL_WINDOW - 0.001), PLAIN).state == state
    closed = handle(state, Tick(), at(ENROL_WINDOW), PLAIN)
    assert closed.actions == (Record("enrolment_refused", {"member_id": "m-ada", "by": "giulia",
                                                           "reason": "window_closed"}),)
    assert closed.state.enrolment is None
    # a tap that arrives as the window closes, before the tick, binds nothing
    assert handle(state, tap(None), at(ENROL_WINDOW), PLAIN).outcome.reason == "unknown_badge"


def test_enrolment_leaves_the_session_holder_free_to_end_it():
    state = enrolling(run([(0, tap(ADA))])[0], seconds=1)
    step = handle(state, tap(ADA), at(10), PLAIN)
    assert step.outcome.action == "ended" and step.state.enrolment == state.enrolment
    assert relays(step) == [False]


def test_enrolment_a_newer_one_replaces_it():
    state = handle(enrolling(), Enrol("m-bob", "tech", known=True), at(30), PLAIN).state
    assert state.enrolment.member_id == "m-bob" and state.enrolment.until == mono(30 + ENROL_WINDOW)


# --- the out-of-order button ---------------------------------------------------------------------

def test_report_held_2_s_ends_the_session_locks_and_names_the_last_tapper():
    state, steps = run([(0, tap(ADA)), (100, ReportButton(True, LastTap("m-ada", mono(0)))), (101.9, Tick()),
                        (102, Tick())])
    assert steps[1].actions == () and steps[2].actions == ()
    report = steps[3]
    assert report.actions == (
        Relay(False),
        Record("session_ended", {"member_id": "m-ada", "duration_s": 102.0, "reason": "out_of_order"}),
        Record("machine_locked", {"by": REPORT_BUTTON, "reason": "out_of_order"}),
        Record("out_of_order_reported", {"by": "m-ada"}),
        Indicate(Signal.OUT_OF_ORDER),
    )
    assert state.locked and state.session is None and not state.relay and state.label == "locked"
    # members are refused, staff may still use it, unlock clears it
    assert handle(state, tap(BOB), at(110), PLAIN).outcome.reason == "machine_locked"
    assert handle(state, tap(STAFF), at(110), PLAIN).outcome.action == "started"
    unlocked = handle(state, Unlock("tech"), at(120), PLAIN).state
    assert handle(unlocked, tap(BOB), at(121), PLAIN).outcome.action == "started"


@pytest.mark.parametrize("last, by", [
    (None, None),                                  # no tap since the agent started
    (LastTap("m-bob", mono(0)), "m-bob"),
    (LastTap(None, mono(0)), None),                # an unknown badge, or a card that did not authenticate
    (LastTap("m-bob", mono(-REPORTER_WINDOW)), "m-bob"),   # 5 minutes ago, to the second
    (LastTap("m-bob", mono(-REPORTER_WINDOW - 1)), None),  # longer ago
])
def test_report_names_the_member_of_the_last_tap_within_5_minutes_of_the_press(last, by):
    assert reporter(last, mono(0)) == by
    pressed = handle(State(), ReportButton(True, last), at(0), PLAIN).state
    assert pressed.report.by == by
    held = handle(handle(pressed, ReportButton(True, LastTap("m-ada", mono(1))), at(1), PLAIN).state, Tick(),
                  at(2), PLAIN)  # still the same press: who it names was settled when it began
    assert ("out_of_order_reported", {"by": by}) in records(held)


def test_report_a_bouncing_button_never_reports():
    events = [(t * 0.5, ReportButton(t % 2 == 0)) for t in range(40)] + [(20, Tick()), (30, Tick())]
    state, steps = run(events)
    assert not any(step.actions for step in steps) and not state.locked


def test_report_a_stuck_button_reports_once_and_again_only_after_a_release():
    state, steps = run([(0, ReportButton(True)), (2, Tick()), (100, Tick()), (3600, Tick()),
                        (3601, Unlock("tech")), (3700, Tick())])
    assert [kind for s in steps for kind, _ in records(s)] == ["machine_locked", "out_of_order_reported",
                                                               "machine_unlocked"]
    state, steps = run([(3800, ReportButton(False)), (3802, Tick()), (3810, ReportButton(True)), (3812, Tick())],
                       state=state)
    assert [kind for s in steps for kind, _ in records(s)] == ["machine_locked", "out_of_order_reported"]


def test_report_on_a_locked_machine_reports_without_locking_again():
    state, steps = run([(0, Lock("tech", "tube")), (1, ReportButton(True)), (3, Tick())])
    assert records(steps[2]) == [("out_of_order_reported", {"by": None})]


def test_report_ends_a_session_without_its_run_on():
    m = machine(run_on=30)
    state, steps = run([(0, tap(ADA)), (10, ReportButton(True)), (12, Tick())], m)
    assert relays(steps[2]) == [False] and not state.relay and state.run_on_until is None


def test_report_cuts_a_run_on_in_progress():
    m = machine(run_on=30)
    state, steps = run([(0, tap(ADA)), (10, tap(ADA)), (12, ReportButton(True)), (14, Tick())], m)
    assert relays(steps[1]) == [] and steps[1].state.relay  # the run-on held it after the session
    assert relays(steps[3]) == [False] and not state.relay and state.run_on_until is None and state.locked
    assert next_wakeup(state, m) is None or next_wakeup(state, m) > mono(14)


def test_report_hold_time_comes_from_the_machine():
    quick = Machine(PLAIN.rules, Timing(), dt.timezone.utc, report_hold=0.2)
    state, steps = run([(0, ReportButton(True)), (0.2, Tick())], quick)
    assert state.locked


# --- the bypass key ----------------------------------------------------------------------------------

def test_bypass_on_and_off_once_settled_never_touching_the_relay():
    state, steps = run([(0, tap(ADA)), (10, BypassKey(True)), (10 + BYPASS_SETTLE, Tick()),
                        (20, BypassKey(False)), (20 + BYPASS_SETTLE, Tick())])
    assert [s.actions for s in steps[1:]] == [(), (Record("bypass_on", {}),), (), (Record("bypass_off", {}),)]
    assert state.session is not None and state.relay and not state.bypass.on


def test_bypass_a_bouncing_key_changes_nothing():
    events = [(t * 0.1, BypassKey(t % 2 == 0)) for t in range(20)] + [(1.9 + BYPASS_SETTLE, Tick())]
    state, steps = run(events)
    assert not any(step.actions for step in steps) and not state.bypass.on


def test_bypass_next_wakeup_is_when_it_settles():
    state = handle(State(), BypassKey(True), at(5), PLAIN).state
    assert next_wakeup(state, PLAIN) == mono(5 + BYPASS_SETTLE)
    assert next_wakeup(handle(state, BypassKey(False), at(5.2), PLAIN).state, PLAIN) is None


def test_session_start_records_the_members_name_for_the_status():
    state, _ = run([(0, tap(ADA))])
    assert state.session.name == ADA.name and not state.session.trainer



# --- with secure cards ---------------------------------------------------------------------------

def test_secure_a_card_that_did_not_authenticate_is_never_enrolled_or_inducted():
    clone = Tap("04C10E00", None, authentic=False)
    step = handle(enrolling(), clone, at(10), PLAIN)
    assert step.outcome.reason == "card_not_authentic" and not step.state.grants
    assert step.state.enrolment is not None  # still open for a genuine card
    forged = Tap(UNINDUCTED.badges[0], UNINDUCTED, authentic=False)
    step = handle(training(), forged, at(60), PLAIN)
    assert step.outcome.reason == "card_not_authentic" and not step.state.grants
