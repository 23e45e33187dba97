"""At the machine, through the whole agent (real SQLite, gpiozero mock pins, a FakeClock):
enrolment, trainers' inductions, the out-of-order button and the bypass key, and what
the machine granted surviving restarts until a newer list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.daemon.control import ControlError, request
from agent.link.commands import Command
from tests.support.agents import (
    ADA,
    ALAN,
    MEMBERS,
    FakeClock,
    RunningAgent,
    config_text,
    read_events,
)
from tests.support.helpers import wait_for

REPORT_PIN, BYPASS_PIN = 22, 23
TRAINER = {"id": "tess", "name": "Tess Trainer", "badges": ["04AAAA01"], "status": "active", "expires": None,
           "roles": ["trainer:laser"], "inductions": {"laser": None}}
NEW_BADGE = "0A0045B352"


def members(version: int = 1, generated_at: str = "2026-11-25T08:00:00Z", extra: list | None = None) -> bytes:
    return json.dumps({"v": 1, "version": version, "generated_at": generated_at,
                       "members": [*MEMBERS["members"], TRAINER, *(extra or [])]}).encode()


@pytest.fixture
def machine(tmp_path: Path):
    """Start agents on one storage dir, one at a time, with a shared FakeClock."""
    clock = FakeClock()
    running: list[RunningAgent] = []
    text = config_text(tmp_path / "state", machine='induction_valid = "365d"',
                       extra=f"[report]\npin = {REPORT_PIN}\n[bypass]\npin = {BYPASS_PIN}\n")

    def start() -> RunningAgent:
        agent = RunningAgent(text, clock=clock)
        agent.clock = clock  # the test moves it
        running.append(agent)
        return agent

    yield start
    for agent in running:
        agent.stop()


def enrol(agent: RunningAgent, member_id: str) -> None:
    """`fabpass members enrol MEMBER_ID` as it reaches the agent, by giulia, sent now."""
    agent.agent.call(agent.agent.command, Command("enrol", "giulia", "", ts=agent.clock().wall, member_id=member_id))


def events(agent: RunningAgent, *types: str) -> list[dict]:
    return [e for e in read_events(agent.config.storage.dir) if not types or e["type"] in types]


def fields(event: dict, *keys: str) -> tuple:
    return tuple(event.get(k) for k in keys)


# --- enrolment --------------------------------------------------------------------------------------

def test_machine_enrolment_binds_an_unknown_badge_that_then_opens_sessions_across_restarts(machine):
    a = machine()
    assert a.apply(members())["applied"]
    enrol(a, "alan")
    assert a.agent.call(a.agent.status)["enrolling"] == "alan"
    answer = a.tap(NEW_BADGE)
    assert (answer["action"], answer["granted"], answer["member_id"], answer["relay"]) == ("enrolled", True, "alan", False)
    (enrolled,) = events(a, "badge_enrolled")
    assert fields(enrolled, "member_id", "badge", "by") == ("alan", NEW_BADGE, "giulia")
    assert a.agent.call(a.agent.status)["enrolling"] is None
    # Alan's badge is his now: with his list entry (cnc only), so the laser refuses him by name
    assert (a.tap(NEW_BADGE)["reason"], a.tap(NEW_BADGE)["member_id"]) == ("not_inducted", "alan")
    a.stop()
    b = machine()
    assert b.tap(NEW_BADGE)["member_id"] == "alan", "the enrolled badge survives a restart"


def test_machine_enrolled_badge_holds_until_a_list_generated_after_it(machine):
    a = machine()
    a.apply(members(extra=[{"id": "eve", "name": "Eve", "badges": [], "status": "active", "expires": None,
                            "roles": [], "inductions": {"laser": None}}]))
    enrol(a, "eve")
    assert a.tap(NEW_BADGE)["action"] == "enrolled"
    assert a.tap(NEW_BADGE)["action"] == "started" and a.relay_is_on()
    assert a.tap(NEW_BADGE)["action"] == "ended"
    # a list generated before the enrolment (at 08:00; the clock says 09:00) does not undo it
    assert a.apply(members(2, extra=[{"id": "eve", "name": "Eve", "badges": [], "status": "active",
                                      "expires": None, "roles": [], "inductions": {"laser": None}}]))["applied"]
    assert a.tap(NEW_BADGE)["action"] == "started"
    assert a.tap(NEW_BADGE)["action"] == "ended"
    # one generated after it decides: the lab's source has not got the badge, so it is unknown
    assert a.apply(members(3, "2026-11-25T10:00:00Z"))["applied"]
    assert a.tap(NEW_BADGE)["reason"] == "unknown_badge"
    assert a.agent.outbox.get("grants") is None


def test_machine_enrolment_refusals(machine):
    a = machine()
    a.apply(members())
    enrol(a, "nobody")
    enrol(a, "alan")
    assert a.tap(ADA)["action"] == "started"  # Ada's badge is in the list: hers, not Alan's to take
    assert a.tap(ADA)["action"] == "ended"
    a.clock.advance(61)
    a.tick()
    assert a.tap(NEW_BADGE)["reason"] == "unknown_badge"  # the window has closed
    refused = [fields(e, "member_id", "reason", "badge", "owner") for e in events(a, "enrolment_refused")]
    assert refused == [("nobody", "unknown_member", None, None), ("alan", "badge_known", ADA, "ada"),
                       ("alan", "badge_known", ADA, "ada"), ("alan", "window_closed", None, None)]
    assert not events(a, "badge_enrolled") and not a.relay_is_on()


# --- trainers' inductions ----------------------------------------------------------------------------

def test_machine_trainer_inducts_during_their_session_and_it_lasts_across_a_restart(machine):
    a = machine()
    a.apply(members())
    assert a.tap("04AAAA01")["action"] == "started"
    status = a.agent.call(a.agent.status)
    assert (status["member_id"], status["member_name"], status["induction"]) == ("tess", "Tess Trainer", "laser")
    answer = a.tap(ALAN)
    assert (answer["action"], answer["granted"], answer["member_id"], answer["relay"]) == ("inducted", True, "alan", True)
    (granted,) = events(a, "induction_granted")
    assert fields(granted, "member_id", "induction", "by", "expires") == ("alan", "laser", "tess", "2027-11-25")
    assert a.relay_is_on() and a.agent.call(a.agent.status)["member_id"] == "tess"  # the training goes on
    assert a.tap(ALAN)["reason"] == "in_use"
    assert a.tap("04AAAA01")["action"] == "ended"
    a.stop()
    b = machine()
    assert b.tap(ALAN)["action"] == "started" and b.relay_is_on()


def test_machine_status_member_name_is_null_for_a_member_without_one(machine):
    a = machine()
    nameless = {"id": "m-x", "badges": ["04BBBB01"], "status": "active", "expires": None, "roles": [],
                "inductions": {"laser": None}}
    assert a.apply(members(extra=[nameless]))["applied"]
    assert a.tap("04BBBB01")["action"] == "started"
    status = a.agent.call(a.agent.status)
    assert (status["member_id"], status["member_name"]) == ("m-x", None)


def test_machine_no_induction_past_a_suspension_or_from_a_non_trainer(machine):
    a = machine()
    hedy = {**MEMBERS["members"][3], "inductions": {}}  # suspended, not inducted
    a.apply(json.dumps({"v": 1, "version": 1, "generated_at": None,
                        "members": [*MEMBERS["members"][:3], hedy, TRAINER]}).encode())
    assert a.tap("04AAAA01")["action"] == "started"
    assert a.tap(hedy["badges"][0])["reason"] == "suspended"
    assert a.tap("04AAAA01")["action"] == "ended"
    assert a.tap(ADA)["action"] == "started"  # Ada is no trainer
    assert a.tap(ALAN)["reason"] == "not_inducted"
    assert not events(a, "induction_granted")


@pytest.mark.parametrize("change", ["suspended", "no longer a trainer", "removed"])
def test_machine_no_induction_by_a_trainer_a_list_revoked_during_their_session(machine, change):
    a = machine()
    a.apply(members())
    assert a.tap("04AAAA01")["action"] == "started"
    later = {"suspended": [{**TRAINER, "status": "suspended"}], "no longer a trainer": [{**TRAINER, "roles": []}],
             "removed": []}[change]
    a.clock.advance(60)
    assert a.apply(json.dumps({"v": 1, "version": 2, "generated_at": "2026-11-25T09:00:00Z",
                               "members": [*MEMBERS["members"], *later]}).encode())["applied"]
    assert a.tap(ALAN)["reason"] == "not_inducted" and not events(a, "induction_granted")
    assert a.relay_is_on()  # the session itself goes on, as any session under a newer list


def test_machine_a_trainer_a_newer_list_still_names_trainer_goes_on_inducting(machine):
    a = machine()
    a.apply(members())
    assert a.tap("04AAAA01")["action"] == "started"
    a.clock.advance(60)
    assert a.apply(members(version=2, generated_at="2026-11-25T09:00:00Z"))["applied"]
    assert a.tap(ALAN)["action"] == "inducted"


def test_machine_a_tap_waiting_while_a_list_is_taken_is_judged_with_its_trainer_rejudged(machine):
    """The list is taken off the loop (its cache file swapped at once) and held against the
    session on the loop afterwards: a tap already queued must not meet the new list with the
    old trainer."""
    import threading

    a = machine()
    a.apply(members())
    assert a.tap("04AAAA01")["action"] == "started"
    a.clock.advance(60)
    gate = threading.Event()
    a.agent.submit(gate.wait)  # the loop is busy
    queued = a.agent.submit(a.agent.tap, ALAN)  # Alan taps meanwhile
    suspended = {**TRAINER, "status": "suspended"}
    assert a.apply(json.dumps({"v": 1, "version": 2, "generated_at": "2026-11-25T09:00:00Z",
                               "members": [*MEMBERS["members"], suspended]}).encode())["applied"]
    gate.set()
    assert queued.result(10)["reason"] == "not_inducted" and not events(a, "induction_granted")


def test_machine_members_check_never_enrols_nor_says_granted_for_an_unknown_badge(machine):
    a = machine()
    a.apply(members())
    storage = a.config.storage.dir
    enrol(a, "alan")
    assert request(storage, {"op": "check", "badge": NEW_BADGE}) == {
        "granted": False, "action": "refused", "reason": "unknown_badge", "member_id": None}
    assert a.agent.call(a.agent.status)["enrolling"] == "alan"  # the check took nothing from it
    assert a.tap(NEW_BADGE)["action"] == "enrolled"


# --- the out-of-order button ---------------------------------------------------------------------------

def drive(a: RunningAgent, pin_number: int, active: bool, sensed) -> None:
    """Drive an input (active low, pulled up) and wait until the loop has sensed it."""
    pin = a.pins.pin(pin_number)
    pin.drive_low() if active else pin.drive_high()
    wait_for(lambda: a.agent.call(lambda: sensed(a.agent.state)) == active, 5, f"the loop to see pin {pin_number}")


def press(a: RunningAgent, pressed: bool) -> None:
    drive(a, REPORT_PIN, pressed, lambda state: state.report.sensed)


def test_machine_report_button_held_ends_the_session_and_locks_naming_the_last_tapper(machine):
    a = machine()
    a.apply(members())
    assert a.tap(ADA)["action"] == "started"
    press(a, True)
    a.clock.advance(1.9)
    a.tick()
    assert a.relay_is_on() and not events(a, "out_of_order_reported")
    a.clock.advance(0.1)
    a.tick()
    assert not a.relay_is_on()
    ended, locked, reported = events(a, "session_ended", "machine_locked", "out_of_order_reported")
    assert fields(ended, "member_id", "reason") == ("ada", "out_of_order")
    assert fields(locked, "by", "reason") == ("report button", "out_of_order")
    assert reported["by"] == "ada"
    status = a.agent.call(a.agent.status)
    assert (status["state"], status["locked"], status["relay"]) == ("locked", True, False)
    press(a, False)
    assert a.tap(ADA)["reason"] == "machine_locked"
    assert a.tap("DEADBEEF")["action"] == "started"  # staff may still use it
    a.tap("DEADBEEF")
    a.agent.call(a.agent.command, Command("unlock", "tech", "fixed", ts=a.clock().wall))
    assert a.tap(ADA)["action"] == "started"


def test_machine_a_bouncing_or_stuck_button_never_switches_the_relay_on(machine):
    a = machine()
    a.apply(members())
    relay = a.relay_pin
    for _ in range(20):  # contact bounce: 20 presses of 0.1 s
        press(a, True)
        a.clock.advance(0.1)
        a.tick()
        press(a, False)
    assert not events(a, "out_of_order_reported")
    press(a, True)  # then stuck
    for _ in range(5):
        a.clock.advance(60)
        a.tick()
    assert len(events(a, "out_of_order_reported")) == 1
    assert all(int(s.state) == 1 for s in relay.states[1:]), "the relay pin (active-low) never went on"
    a.stop()
    b = machine()  # still stuck across a restart: not a new report
    b.clock.advance(60)
    b.tick()
    assert len(events(b, "out_of_order_reported")) == 1 and b.agent.state.locked


# --- the bypass key ----------------------------------------------------------------------------------------

def turn(a: RunningAgent, closed: bool) -> None:
    drive(a, BYPASS_PIN, closed, lambda state: state.bypass.sensed)


def test_machine_bypass_key_is_reported_once_settled_and_remembered_across_restarts(machine):
    a = machine()
    for _ in range(10):  # bounce
        turn(a, True)
        turn(a, False)
    turn(a, True)
    a.clock.advance(0.5)
    a.tick()
    assert [e["type"] for e in events(a, "bypass_on", "bypass_off")] == ["bypass_on"]
    assert a.agent.call(a.agent.status)["bypass"] is True and not a.relay_is_on()
    a.stop()
    b = machine()  # the key is still closed: nothing new
    b.pins.pin(BYPASS_PIN).drive_low()
    b.clock.advance(5)
    b.tick()
    assert b.agent.call(b.agent.status)["bypass"] is True
    turn(b, False)
    b.clock.advance(0.5)
    b.tick()
    assert [e["type"] for e in events(b, "bypass_on", "bypass_off")] == ["bypass_on", "bypass_off"]
    assert b.agent.call(b.agent.status)["bypass"] is False


# --- fabpass input, through the control socket ------------------------------------------------------------

def test_machine_simulated_inputs_are_set_through_the_control_socket(machine):
    a = machine()
    storage = a.config.storage.dir
    assert request(storage, {"op": "input", "name": "bypass", "on": True}) == {"input": "bypass", "on": True}
    assert a.agent.state.bypass.sensed and a.pins.pin(BYPASS_PIN).state == 0  # closed reads low
    with pytest.raises(ControlError, match=r"no sensor input: .*has no \[sensor\] pin") as caught:
        request(storage, {"op": "input", "name": "sensor", "on": True})
    assert caught.value.usage
    for bad in ({"name": "door", "on": True}, {"name": "report", "on": "yes"}):
        with pytest.raises(ControlError, match="an input is one of sensor, report, bypass") as caught:
            request(storage, {"op": "input", **bad})
        assert caught.value.usage


def test_machine_members_check_without_the_agent_knows_what_it_granted(machine, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from agent.cli import main
    from agent.daemon.clock import SystemClock

    a = machine()
    a.apply(members())
    enrol(a, "alan")
    assert a.tap(NEW_BADGE)["action"] == "enrolled"
    assert a.tap("04AAAA01")["action"] == "started" and a.tap(ALAN)["action"] == "inducted"
    a.stop()
    config = tmp_path / "agent.toml"
    config.write_text(config_text(tmp_path / "state", machine='induction_valid = "365d"',
                                  extra=f"[report]\npin = {REPORT_PIN}\n[bypass]\npin = {BYPASS_PIN}\n"))
    check = ["members", "check", NEW_BADGE, "--config", str(config), "--json"]
    simulated = CliRunner().invoke(main, check, env={"FABPASS_SIMULATE": "1"})  # the host's clock trusted
    assert json.loads(simulated.output) == {"granted": True, "action": "started", "reason": None, "member_id": "alan"}
    # on a Pi whose clock is not synchronised the induction's expiry cannot be trusted (this
    # host's own clock state is its own: the kernel's answer is what is replaced)
    monkeypatch.setattr(SystemClock, "synchronised", lambda self: False)
    untrusted = CliRunner().invoke(main, check, env={"FABPASS_SIMULATE": "0"})
    assert json.loads(untrusted.output) == {"granted": False, "action": "refused", "reason": "clock_unsynchronised",
                                            "member_id": "alan"}


def test_machine_a_report_never_names_the_member_whose_badge_a_clone_carried(tmp_path):
    """With secure cards, a card that did not authenticate is tapped by nobody known: a
    report made after it names no one, not the member whose UID the clone copied."""
    from agent.hardware.securecard import CardCheck

    clock = FakeClock()
    text = config_text(tmp_path / "state", extra=f'[report]\npin = {REPORT_PIN}\n').replace(
        'type = "simulated"', f'type = "mfrc522"\nsecure = "ntag424"\ncard_key_file = "{tmp_path}/card.key"')
    a = RunningAgent(text, clock=clock)  # simulated: genuine cards, unless a check says otherwise
    a.clock = clock
    try:
        a.apply(members())
        assert a.tap(ADA)["action"] == "started"
        clone = a.agent.call(a.agent.tap, ADA, CardCheck(ADA, authentic=False))
        assert clone["reason"] == "card_not_authentic"
        press(a, True)
        a.clock.advance(2)
        a.tick()
        (reported,) = events(a, "out_of_order_reported")
        assert reported["by"] is None
    finally:
        a.stop()
