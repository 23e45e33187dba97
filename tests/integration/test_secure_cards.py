"""Secure cards in the agent: real SQLite, gpiozero's mock pins read back, and a reader
whose field holds the project's emulated NTAG 424 DNA cards and clones
(tests/support/emulated_ntag424.py: FieldReader takes the tap path the MFRC522
reader takes, tested on the emulated chip in test_reader_mfrc522.py). The relay's
whole pin history is checked: no card that
failed its authentication switches it on, not even for an instant."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import parse
from agent.daemon.agent import Agent
from agent.devtools.emulated_mfrc522 import Card
from agent.hardware.cardkeys import CardKeyError, diversify
from agent.hardware.securecard import SECURE_BUDGET, CardVerifier
from agent.hardware.simulated import SimulatedReader
from agent.link.commands import Command
from tests.support.agents import MEMBERS, RunningAgent, members_json
from tests.support.cards import MASTER, key_file, secure_text
from tests.support.emulated_ntag424 import CardField, FieldReader, Ntag424, UidClone
from tests.support.helpers import wait_for

ADA = "04A1B2C3D4E5F6"  # a member's NTAG 424 DNA
CLASSIC = "C1A2B3D4"  # a MIFARE Classic the list accepts by UID alone
MEMBERS_UID = [*MEMBERS["members"],
               {"id": "linus", "name": "Linus", "badges": [f"uid:{CLASSIC}"], "status": "active",
                "expires": None, "roles": [], "inductions": {"laser": None}}]


def genuine(uid: str = ADA) -> Ntag424:
    return Ntag424(uid, {2: diversify(MASTER, bytes.fromhex(uid))})


@pytest.fixture
def secure_agent(tmp_path):
    started: list[RunningAgent] = []

    def start(field: CardField, rearm: float = 0.5) -> RunningAgent:
        reader = FieldReader(field, CardVerifier(MASTER, 2), rearm=rearm)
        agent = RunningAgent(secure_text(tmp_path), simulate=False, reader=reader)
        started.append(agent)
        agent.apply(members_json(members=MEMBERS_UID))
        return agent

    yield start
    for agent in started:
        agent.stop()


def events_of(agent: RunningAgent, kind: str) -> list[dict]:
    return [e for e in agent.events() if e["type"] == kind]


def relay_levels(agent: RunningAgent) -> list[int]:
    return [int(s.state) for s in agent.relay_pin.states]


def test_secure_cards_a_genuine_card_starts_a_session_and_a_clone_of_it_is_refused(secure_agent):
    field = CardField()
    a = secure_agent(field, rearm=0.1)
    card = field.place(genuine())
    wait_for(lambda: events_of(a, "session_started"), 10, "the genuine card's session")
    assert a.relay_is_on()
    field.remove(card)
    removed = time.monotonic()
    a.agent.call(a.agent.command, Command("end_session", "test", "", ts=a.agent.clock().wall))
    assert not a.relay_is_on()
    history = relay_levels(a)
    wait_for(lambda: time.monotonic() - removed > 0.3, 5, "the card to be away longer than rearm")
    clone = field.place(UidClone(ADA))
    wait_for(lambda: events_of(a, "access_denied"), 10, "the clone's refusal")
    denied = events_of(a, "access_denied")[0]
    assert (denied["reason"], denied["badge"], denied["member_id"]) == ("card_not_authentic", ADA, "ada")
    assert "secure" not in denied
    field.remove(clone)
    assert relay_levels(a) == history and not a.relay_is_on()  # the clone never touched the relay
    assert len(events_of(a, "session_started")) == 1


def test_secure_cards_a_card_held_on_the_reader_is_one_tap(secure_agent):
    field = CardField()
    a = secure_agent(field, rearm=0.3)
    card = field.place(genuine())
    wait_for(lambda: events_of(a, "session_started"), 10, "the session")
    polls = card.answers
    wait_for(lambda: card.answers >= polls + 50, 10, "50 more polls of the held card")
    assert len(events_of(a, "session_started")) == 1 and not events_of(a, "session_ended")
    assert sum(1 for apdu in card.apdus if apdu[:2] == b"\x90\x71") == 1  # authenticated once
    assert a.relay_is_on()


def test_secure_cards_a_uid_badge_is_accepted_by_uid_and_says_secure_false(secure_agent):
    field = CardField()
    a = secure_agent(field)
    field.place(Card(CLASSIC))  # SAK 08: no ISO 14443-4, so no authentication
    wait_for(lambda: events_of(a, "session_started"), 10, "the uid: badge's session")
    started = events_of(a, "session_started")[0]
    assert (started["member_id"], started["badge"], started["secure"]) == ("linus", CLASSIC, False)
    assert a.relay_is_on()


def test_secure_cards_an_unprovisioned_ntag424_of_a_member_is_refused(secure_agent):
    field = CardField()
    a = secure_agent(field)
    field.place(Ntag424(ADA))  # factory keys: the lab's key was never put on it
    wait_for(lambda: events_of(a, "access_denied"), 10, "the refusal")
    assert events_of(a, "access_denied")[0]["reason"] == "card_not_authentic"
    assert relay_levels(a) == [0, 1] and not a.relay_is_on()  # off (active-low: high) all along


def test_secure_cards_a_slow_card_never_stalls_the_agent(secure_agent):
    """The reader's thread is stuck in a card's exchange: the agent's loop still answers
    status and commands at once; the check gives up at its budget and the card is refused."""
    field = CardField()
    a = secure_agent(field)
    entered, release = threading.Event(), threading.Event()

    def stuck() -> None:
        if field.exchanges == 2:  # the ISOSelectFile, after RATS
            entered.set()
            release.wait(10)

    field.on_exchange = stuck
    field.place(genuine())
    wait_for(entered.is_set, 10, "the reader to be inside the card's exchange")
    began = time.monotonic()
    assert a.agent.call(a.agent.status, timeout=2)["state"] == "idle"
    a.agent.call(a.agent.command, Command("lock", "test", "slow card", ts=a.agent.clock().wall), timeout=2)
    assert a.agent.call(a.agent.status, timeout=2)["locked"]
    waited = time.monotonic() - began
    wait_for(lambda: time.monotonic() - began > SECURE_BUDGET, 5, "the budget to pass")
    release.set()
    wait_for(lambda: events_of(a, "access_denied"), 10, "the slow card's refusal")
    assert events_of(a, "access_denied")[0]["reason"] == "card_not_authentic"
    assert waited < 2 and not a.relay_is_on()


def test_secure_cards_a_reader_that_does_not_authenticate_accepts_only_uid_badges(tmp_path, caplog):
    """Fail closed: with secure set, a reader that cannot check cards (the MFRC522 before
    its ISO 14443-4 transceive) proves nothing, so only uid: badges are let in."""
    reader = SimulatedReader()
    with caplog.at_level(logging.ERROR, "fabpass.agent"):
        a = RunningAgent(secure_text(tmp_path), simulate=False, reader=reader)
    try:
        assert "does not authenticate cards" in caplog.text
        a.apply(members_json(members=MEMBERS_UID))
        assert a.tap(ADA)["reason"] == "card_not_authentic"
        assert a.tap(CLASSIC)["action"] == "started"
        assert events_of(a, "session_started")[0]["secure"] is False
    finally:
        a.stop()


def test_secure_cards_simulated_cards_are_genuine(tmp_path):
    """With --simulate there is no card to check (and no key file is needed)."""
    text = secure_text(tmp_path, key=tmp_path / "absent.key")
    a = RunningAgent(text, simulate=True)
    try:
        a.apply(members_json())
        assert a.tap(ADA)["action"] == "started"
        assert "secure" not in events_of(a, "session_started")[0]
    finally:
        a.stop()


def test_secure_cards_members_check_counts_uid_badges(tmp_path):
    a = RunningAgent(secure_text(tmp_path), simulate=False, reader=SimulatedReader())
    try:
        a.apply(members_json(members=MEMBERS_UID))
        result = a.agent.call(lambda: a.agent.storage.check(CLASSIC, a.agent.state, a.agent.clock(), True))
        assert result == {"granted": True, "reason": None, "member_id": "linus"}
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
        started = events_of(a, "session_started")[0]
        assert started["badge"] == BadgeHasher(b"k" * 32)(CLASSIC) and started["secure"] is False
        assert CLASSIC not in str(a.events())
    finally:
        a.stop()
