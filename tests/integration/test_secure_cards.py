"""Secure cards in the agent, through the reader's real code path: the agent builds its
MFRC522 reader from its config, as `fabpass run` does, and the unmodified `mfrc522`
driver and the reader's own transceive run over the project's emulated chip in real
time (agent/devtools/emulated_mfrc522.py), with the emulated NTAG 424 DNA cards and
clones on it (agent/devtools/emulated_ntag424.py); real SQLite; gpiozero's mock pins.

The relay's whole pin history is checked: no card that failed its authentication
switches it on, not even for an instant. (Relay active-low: the mock pin starts
at 0, the agent claims it off, 1; on is 0.)"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import parse
from agent.daemon.agent import Agent
from agent.daemon.control import request
from agent.devtools.emulated_mfrc522 import Card, EmulatedMFRC522, RealTime, installed
from agent.devtools.emulated_ntag424 import (
    GarbageClone,
    KeylessClone,
    Ntag424,
    UidClone,
)
from agent.hardware.cardkeys import CardKeyError, diversify
from agent.hardware.securecard import SECURE_BUDGET
from agent.hardware.simulated import SimulatedReader
from agent.link.commands import Command
from tests.support.agents import MEMBERS, FakeClock, RunningAgent, members_json
from tests.support.cards import MASTER, key_file, secure_text
from tests.support.helpers import wait_for

ADA = "04A1B2C3D4E5F6"  # a member's NTAG 424 DNA
CLASSIC = "C1A2B3D4"  # a MIFARE Classic the list accepts by UID alone
MEMBERS_UID = [*MEMBERS["members"],
               {"id": "linus", "name": "Linus", "badges": [f"uid:{CLASSIC}"], "status": "active",
                "expires": None, "roles": [], "inductions": {"laser": None}}]
REARM = 0.2
NEVER_ON = [0, 1]  # the pin's whole history when the relay was never switched on
AUTHENTICATIONS = b"\x90\x71"  # AuthenticateEV2First, its first part
# The frames a card hears in a tap: WUPA, anticollision and SELECT at two cascade levels (5),
# RATS (6), ISOSelectFile (7), AuthenticateEV2First's two parts (8, 9), GetCardUID (10),
# S(DESELECT) (11).
HEARD_BEFORE = {"RATS": 5, "ISOSelectFile": 6, "AuthenticateEV2First": 7, "its second part": 8, "GetCardUID": 9}


def genuine(uid: str = ADA, master: bytes = MASTER, **iso) -> Ntag424:
    """A member's card, provisioned for the lab whose master key is `master`."""
    return Ntag424(uid, {2: diversify(master, bytes.fromhex(uid))}, **iso)


class Machine:
    """A secure agent on the emulated MFRC522 (`chip`), a member list with a uid: badge."""

    def __init__(self, chip: EmulatedMFRC522, agent: RunningAgent) -> None:
        self.chip, self.a = chip, agent
        self._left_at = float("-inf")

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.a.events() if e["type"] == kind]

    def relay(self) -> list[int]:
        """The relay pin's whole history."""
        return [int(s.state) for s in self.a.relay_pin.states]

    def lay(self, card: Card) -> Card:
        """Lay `card` on the reader once the last card has been away for longer than rearm
        (the same UID sooner is the same presentation)."""
        wait_for(lambda: time.monotonic() - self._left_at > 1.5 * REARM, 5, "the last card to be away")
        return self.chip.place(card)

    def take(self, card: Card) -> None:
        if card in self.chip.cards:  # not pulled away already
            self.chip.remove(card)
        self._left_at = time.monotonic()


@pytest.fixture
def machine(tmp_path) -> Iterator[Callable[..., Machine]]:
    chip = EmulatedMFRC522(clock=RealTime())
    started: list[RunningAgent] = []

    def start(machine: str = "", clock: FakeClock | None = None) -> Machine:
        text = secure_text(tmp_path, reader=f'rearm = "{REARM}s"', machine=machine)
        agent = RunningAgent(text, clock=clock, simulate=False, config_reader=True)
        started.append(agent)
        assert agent.agent.reader.authenticates
        wait_for(lambda: agent.agent.reader.healthy, 10, "the emulated MFRC522 to come up")
        agent.apply(members_json(members=MEMBERS_UID))
        return Machine(chip, agent)

    with installed({(0, 0): chip}):
        yield start
        for agent in started:
            agent.stop()


def test_secure_cards_a_genuine_card_is_one_authentic_tap_that_switches_the_relay(machine):
    m = machine()
    card = m.lay(genuine())
    wait_for(lambda: m.events("session_started"), 10, "the genuine card's session")
    started = m.events("session_started")[0]
    assert (started["member_id"], started["badge"]) == ("ada", ADA) and "secure" not in started
    assert m.a.relay_is_on() and m.relay() == [0, 1, 0]
    assert sum(1 for apdu in card.apdus if apdu[:2] == AUTHENTICATIONS) == 1
    m.take(card)
    m.lay(card)  # the second tap ends the session
    wait_for(lambda: m.events("session_ended"), 10, "the session's end")
    assert m.events("session_ended")[0]["reason"] == "badge_off"
    assert m.relay() == [0, 1, 0, 1] and not m.events("access_denied")


def test_secure_cards_no_key_is_ever_logged(machine, caplog):
    """Neither the master key nor a card's key reaches the log, at any level, through a
    genuine tap and a clone's."""
    with caplog.at_level(logging.DEBUG):
        m = machine()
        card = m.lay(genuine())
        wait_for(lambda: m.events("session_started"), 10, "the session")
        m.take(card)
        m.lay(KeylessClone(ADA))
        wait_for(lambda: m.events("access_denied"), 10, "the clone's refusal")
    logged = caplog.text.lower()
    assert "card_not_authentic" in logged
    for key in (MASTER, diversify(MASTER, bytes.fromhex(ADA))):
        assert key.hex() not in logged


def _pulled(before: str) -> Callable[[EmulatedMFRC522], Card]:
    def make(chip: EmulatedMFRC522) -> Card:
        card = genuine()
        chip.pull_after(card, HEARD_BEFORE[before])
        return card
    return make


NOT_AUTHENTIC: dict[str, Callable[[EmulatedMFRC522], Card]] = {
    "a UID clone that answers RATS with nothing": lambda chip: UidClone(ADA),
    "a clone that answers with garbage": lambda chip: GarbageClone(ADA),
    "a clone that answers with garbage, badly framed": lambda chip: GarbageClone(ADA, crc_ok=False),
    "a clone that frames perfectly but has no key": lambda chip: KeylessClone(ADA),
    "an NTAG 424 DNA with another lab's key": lambda chip: genuine(master=bytes(range(16))),
    "an NTAG 424 DNA never provisioned": lambda chip: Ntag424(ADA),
    "an NTAG 21x with the UID (no ISO 14443-4)": lambda chip: Card(ADA),
    **{f"the genuine card pulled away before {frame}": _pulled(frame) for frame in HEARD_BEFORE},
}


@pytest.mark.parametrize("make", NOT_AUTHENTIC.values(), ids=NOT_AUTHENTIC.keys())
def test_secure_cards_a_card_that_does_not_authenticate_is_refused_and_never_touches_the_relay(machine, make):
    """Refused `card_not_authentic` with the badge as read (a member's: someone copied it);
    the relay never moves; and the reader is not wedged: the genuine card then taps."""
    m = machine()
    card = m.lay(make(m.chip))
    wait_for(lambda: m.events("access_denied"), 10, "the refusal")
    denied = m.events("access_denied")
    assert [(e["reason"], e["badge"], e["member_id"]) for e in denied] == [("card_not_authentic", ADA, "ada")]
    assert "secure" not in denied[0]
    assert m.relay() == NEVER_ON and not m.events("session_started")
    m.take(card)
    m.lay(genuine())
    wait_for(lambda: m.events("session_started"), 10, "the genuine card's session after it")
    assert m.relay() == [0, 1, 0] and len(m.events("access_denied")) == 1


def test_secure_cards_a_card_pulled_once_it_has_proved_itself_taps(machine):
    """Gone during S(DESELECT): it has answered GetCardUID, the deselect is a courtesy."""
    m = machine()
    card = genuine()
    m.chip.pull_after(card, 10)
    m.lay(card)
    wait_for(lambda: m.events("session_started"), 10, "the session")
    assert m.relay() == [0, 1, 0] and card not in m.chip.cards


def test_secure_cards_a_clone_of_the_holders_badge_neither_ends_nor_extends_her_session(machine):
    m = machine()
    card = m.lay(genuine())
    wait_for(lambda: m.events("session_started"), 10, "the session")
    m.take(card)
    m.lay(KeylessClone(ADA))
    wait_for(lambda: m.events("access_denied"), 10, "the clone's refusal")
    assert m.events("access_denied")[0]["reason"] == "card_not_authentic"
    assert m.relay() == [0, 1, 0] and m.a.relay_is_on()
    assert not m.events("session_ended") and not m.events("session_extended")
    assert m.a.agent.call(m.a.agent.status)["state"] == "in_use"


def test_secure_cards_a_card_that_asks_for_more_time_authenticates(machine):
    """S(WTX): 100 ms per command, longer than the card's frame waiting time of 39 ms, so
    the card asks for more time before each of its four answers."""
    m = machine()
    card = m.lay(genuine(busy=0.1))
    wait_for(lambda: m.events("session_started"), 10, "the session")
    assert card.extensions == 4
    assert m.relay() == [0, 1, 0]


@pytest.mark.parametrize("make, kind", [
    (genuine, "session_started"),
    (lambda: UidClone(ADA), "access_denied"),
    (lambda: GarbageClone(ADA), "access_denied"),
], ids=["genuine", "uid clone", "garbage clone"])
def test_secure_cards_a_card_held_for_seconds_is_one_tap(machine, make, kind):
    m = machine()
    card = m.lay(make())
    wait_for(lambda: m.events(kind), 10, "the tap")
    seen = m.chip.requests
    wait_for(lambda: m.chip.requests >= seen + 25, 10, "25 more looks (2.5 s) while the card is held")
    assert len(m.events(kind)) == 1
    assert [e["type"] for e in m.a.events() if e["type"] in ("session_started", "session_ended",
                                                            "access_denied")] == [kind]
    assert m.relay() == ([0, 1, 0] if kind == "session_started" else NEVER_ON)
    if isinstance(card, Ntag424):
        assert sum(1 for apdu in card.apdus if apdu[:2] == AUTHENTICATIONS) == 1
        assert card.answers >= 10  # it was seen at every look of a held card


def test_secure_cards_a_card_that_stalls_for_ever_is_refused(machine):
    """S(WTX) for ever: the check gives up at its budget; the reader goes on."""
    m = machine()
    card = m.lay(genuine(wtx=(59,) * 10_000, wtx_after=0.03))
    wait_for(lambda: m.events("access_denied"), 10, "the refusal")
    assert m.events("access_denied")[0]["reason"] == "card_not_authentic"
    assert m.relay() == NEVER_ON
    m.take(card)
    m.lay(genuine())
    wait_for(lambda: m.events("session_started"), 10, "the next card's session")


def test_secure_cards_a_slow_card_never_stalls_the_agent(machine, tmp_path):
    """The reader's thread is stuck inside a card's exchange (in an SPI transfer): the
    agent's loop still answers the control socket, carries out commands and ends a
    session at its timeout, relay off; the card, once it answers, is past its budget
    and refused."""
    m = machine(machine='max_session = "1h"', clock=(clock := FakeClock()))
    storage = tmp_path / "state"
    held = m.lay(Card(CLASSIC))  # a uid: badge starts a session
    wait_for(lambda: m.events("session_started"), 10, "the uid: badge's session")
    m.take(held)
    entered, release = threading.Event(), threading.Event()
    slow = genuine()
    application = slow.app

    def stuck(apdu: bytes) -> bytes:
        entered.set()
        release.wait(30)
        return application(apdu)

    slow.app = stuck
    m.lay(slow)
    try:
        wait_for(entered.is_set, 10, "the reader to be inside the card's exchange")
        began = time.monotonic()
        assert request(storage, {"op": "status"}, timeout=2)["state"] == "in_use"
        assert request(storage, {"op": "check", "badge": ADA}, timeout=2)["reason"] == "in_use"
        clock.advance(3600)
        m.a.tick()  # max_session has passed
        assert m.events("session_ended")[0]["reason"] == "timeout" and not m.a.relay_is_on()
        m.a.agent.call(m.a.agent.command, Command("lock", "test", "slow card", ts=clock().wall), timeout=2)
        assert request(storage, {"op": "status"}, timeout=2)["locked"]
        wait_for(lambda: time.monotonic() - began > SECURE_BUDGET, 5, "the check's budget to pass")
    finally:
        release.set()
    wait_for(lambda: m.events("access_denied"), 10, "the slow card's refusal")
    assert m.events("access_denied")[0]["reason"] == "card_not_authentic"
    assert m.relay() == [0, 1, 0, 1]  # on for the uid: badge, off at the timeout; never for the slow card


def test_secure_cards_a_uid_badge_is_accepted_by_uid_and_says_secure_false(machine):
    m = machine()
    m.lay(Card(CLASSIC))  # SAK 08: no ISO 14443-4, so no authentication
    wait_for(lambda: m.events("session_started"), 10, "the uid: badge's session")
    started = m.events("session_started")[0]
    assert (started["member_id"], started["badge"], started["secure"]) == ("linus", CLASSIC, False)
    assert m.relay() == [0, 1, 0]


def test_secure_cards_a_reader_that_does_not_authenticate_accepts_only_uid_badges(tmp_path, caplog):
    """Fail closed: with secure set, a reader that cannot check cards proves nothing,
    so only uid: badges are let in."""
    reader = SimulatedReader()
    with caplog.at_level(logging.ERROR, "fabpass.agent"):
        a = RunningAgent(secure_text(tmp_path), simulate=False, reader=reader)
    try:
        assert "does not authenticate cards" in caplog.text
        a.apply(members_json(members=MEMBERS_UID))
        assert a.tap(ADA)["reason"] == "card_not_authentic"
        assert a.tap(CLASSIC)["action"] == "started"
        assert [e for e in a.events() if e["type"] == "session_started"][0]["secure"] is False
    finally:
        a.stop()


def test_secure_cards_simulated_cards_are_genuine(tmp_path):
    """With --simulate there is no card to check (and no key file is needed)."""
    text = secure_text(tmp_path, key=tmp_path / "absent.key")
    a = RunningAgent(text, simulate=True)
    try:
        a.apply(members_json())
        assert a.tap(ADA)["action"] == "started"
        assert "secure" not in [e for e in a.events() if e["type"] == "session_started"][0]
    finally:
        a.stop()


def test_secure_cards_members_check_counts_uid_badges(tmp_path):
    a = RunningAgent(secure_text(tmp_path), simulate=False, reader=SimulatedReader())
    try:
        a.apply(members_json(members=MEMBERS_UID))
        result = a.agent.call(lambda: a.agent.storage.check(CLASSIC, a.agent.state, a.agent.clock(), True))
        assert result == {"granted": True, "action": "started", "reason": None, "member_id": "linus"}
    finally:
        a.stop()


@pytest.mark.parametrize("mode, text, message", [
    (0o644, MASTER.hex(), "readable by others; chmod 600"),
    (0o640, MASTER.hex(), "readable by others; chmod 600"),
    (0o600, "not a key", "32 hex digits"),
    (0o600, MASTER.hex()[:-1], "32 hex digits"),
])
def test_secure_cards_a_bad_key_file_stops_the_agent_at_start(tmp_path, mode, text, message):
    key = key_file(tmp_path, mode, text)
    pins = MockFactory()
    with pytest.raises(CardKeyError) as err:
        Agent(parse(secure_text(tmp_path, key), "agent.toml"), pins=pins)
    assert str(err.value).startswith(f"{key}: ") and message in str(err.value)
    assert text not in str(err.value)
    assert pins.pin(17).state == 1  # the relay (active-low) was claimed off and stays off


def test_secure_cards_a_missing_key_file_stops_the_agent_at_start(tmp_path):
    with pytest.raises(CardKeyError, match="absent.key: cannot read: No such file"):
        Agent(parse(secure_text(tmp_path, tmp_path / "absent.key"), "agent.toml"), pins=MockFactory())


def test_secure_cards_uid_badges_with_badge_hashing(tmp_path):
    """With badge hashing, a uid: badge is stored hashed behind its prefix and still
    accepted by its UID alone; the events show the hash, never the UID."""
    from agent.members.badgehash import BadgeHasher

    hash_key = tmp_path / "badge.key"
    hash_key.write_bytes(b"k" * 32)
    hash_key.chmod(0o600)
    text = secure_text(tmp_path).replace("[storage]", f'[members]\nbadge_hash_key_file = "{hash_key}"\n[storage]')
    a = RunningAgent(text, simulate=False, reader=SimulatedReader())
    try:
        a.apply(members_json(members=MEMBERS_UID))
        assert a.tap(CLASSIC)["action"] == "started"
        started = [e for e in a.events() if e["type"] == "session_started"][0]
        assert started["badge"] == BadgeHasher(b"k" * 32)(CLASSIC) and started["secure"] is False
        assert CLASSIC not in str(a.events())
    finally:
        a.stop()
