"""A secure tap, end to end at the port: select → RATS → ISOSelectFile →
AuthenticateEV2First with the card's diversified key → GetCardUID (MACed, Full
mode) equal to the anticollision UID → S(DESELECT); and every way a card can
fail it, against the project's emulated cards and clones (time emulated).
A card held on the reader, a slow check and a reader fault mid-check are the
reader's to handle: tests/integration/test_reader_mfrc522.py (its secure part)."""

from __future__ import annotations

import pytest

from agent.devtools.emulated_mfrc522 import Card
from agent.devtools.emulated_ntag424 import (
    GarbageClone,
    KeylessClone,
    Ntag424,
    UidClone,
)
from agent.hardware.cardkeys import diversify
from agent.hardware.securecard import SECURE_BUDGET, CardVerifier
from tests.support.card_field import CardField, Noise

MASTER = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
UID = bytes.fromhex("04A1B2C3D4E5F6")
KEY_NO = 2


def genuine(uid: bytes = UID, master: bytes = MASTER, key_no: int = KEY_NO, **iso) -> Ntag424:
    """An NTAG 424 DNA provisioned for this lab: its key `key_no` is its diversified key."""
    return Ntag424(uid, {key_no: diversify(master, uid)}, **iso)


def verifier(field: CardField, key_no: int = KEY_NO, master: bytes = MASTER) -> CardVerifier:
    return CardVerifier(master, key_no, clock=field.clock, sleep=field.sleep)


def tap(card: Card, field: CardField | None = None, key_no: int = KEY_NO):
    field = field or CardField()
    field.place(card)
    found = field.select_card()
    assert found is not None
    return verifier(field, key_no).check(field, *found), field


def test_securecard_a_genuine_card_authenticates() -> None:
    card = genuine()
    check, field = tap(card)
    assert (check.badge, check.authentic, check.why) == ("04A1B2C3D4E5F6", True, "")
    ins = [apdu[:2].hex().upper() for apdu in card.apdus]
    assert ins == ["00A4", "9071", "90AF", "9051"]  # select, AuthenticateEV2First (2 parts), GetCardUID
    assert card.apdus[1][5] == KEY_NO
    assert field.frames[0][0] == b"\xE0\x50" and field.frames[-1][0] == b"\xC2"  # RATS first, S(DESELECT) last
    assert card.state == "HALT"


def test_securecard_takes_the_configured_key_number() -> None:
    check, _ = tap(genuine(key_no=3), key_no=3)
    assert check.authentic
    check, _ = tap(genuine(key_no=3), key_no=2)  # key 2 is still the factory's
    assert not check.authentic


def test_securecard_a_uid_clone_is_not_authentic() -> None:
    check, _ = tap(UidClone(UID))
    assert (check.badge, check.authentic) == ("04A1B2C3D4E5F6", False)
    assert "ISO 14443-4" in check.why


@pytest.mark.parametrize("crc_ok", [True, False])
def test_securecard_a_clone_answering_garbage_is_not_authentic(crc_ok: bool) -> None:
    check, _ = tap(GarbageClone(UID, crc_ok=crc_ok))
    assert not check.authentic and "ATS" in check.why


def test_securecard_a_clone_that_frames_perfectly_without_the_key_is_not_authentic() -> None:
    clone = KeylessClone(UID)
    check, _ = tap(clone)
    assert not check.authentic and "lacks the key" in check.why
    assert [a[:2].hex().upper() for a in clone.apdus] == ["00A4", "9071", "90AF"]  # it never got to GetCardUID


def test_securecard_a_recorded_genuine_exchange_replayed_is_not_authentic() -> None:
    """Someone records a member's card answering a reader, and replays the answers:
    the reader's challenge RndA is new every time, so the recording proves nothing."""
    card = genuine()
    app, recorded = card.app, []
    card.app = lambda apdu: recorded.append(app(apdu)) or recorded[-1]
    assert tap(card)[0].authentic
    check, _ = tap(KeylessClone(UID, answers=recorded[1:]))  # its own select answer, then the recording
    assert not check.authentic and "lacks the key" in check.why


def test_securecard_an_unprovisioned_card_is_not_authentic() -> None:
    """A genuine NTAG 424 DNA with the factory's keys: the card refuses our proof (91AE)."""
    check, _ = tap(Ntag424(UID))
    assert not check.authentic and "91AE" in check.why


def test_securecard_a_card_of_another_lab_is_not_authentic() -> None:
    check, _ = tap(genuine(master=bytes(range(16))))
    assert not check.authentic and "91AE" in check.why


def test_securecard_a_card_whose_uid_does_not_match_is_not_authentic() -> None:
    """A genuine card that holds the right key for the UID the reader saw, but whose
    GetCardUID names another card (an emulator that got one card's key)."""
    card = genuine()
    card.application.reported_uid = bytes.fromhex("04000000000001")
    check, _ = tap(card)
    assert not check.authentic and "UID" in check.why
    assert "04000000000001" not in check.why  # no UID in the log line (badge hashing)


def test_securecard_a_wrong_mac_is_not_authentic() -> None:
    card = genuine()
    card.application.mac_fault = True
    check, _ = tap(card)
    assert not check.authentic and "MAC" in check.why


@pytest.mark.parametrize("sak", [0x08, 0x00, 0x18])
def test_securecard_a_card_without_iso14443_4_is_refused_without_a_word(sak: int) -> None:
    """MIFARE Classic (SAK 08), NTAG 21x (00): the SAK says so; nothing is sent."""
    field = CardField()
    check = verifier(field).check(field, UID, sak)
    assert not check.authentic and f"SAK {sak:02X}" in check.why
    assert field.frames == []


def test_securecard_a_uid_that_is_not_7_bytes_is_refused() -> None:
    field = CardField()
    check = verifier(field).check(field, bytes.fromhex("08A1B2C3"), 0x20)  # a random ID
    assert not check.authentic and "7" in check.why and field.frames == []


@pytest.mark.parametrize("after", [1, 2, 3, 4])
def test_securecard_a_card_pulled_mid_exchange_is_not_authentic_within_the_budget(after: int) -> None:
    """Pulled after RATS, the select, either part of the authentication: before its
    GetCardUID answer, the card has proved nothing."""
    field = CardField()
    field.place(genuine())
    found = field.select_card()
    field.pull_after(after)
    start = field.clock()
    check = verifier(field).check(field, *found)
    assert not check.authentic
    assert field.clock() - start <= SECURE_BUDGET + 0.001


def test_securecard_a_card_pulled_once_it_has_proved_itself_is_authentic() -> None:
    """Gone before S(DESELECT): it has answered GetCardUID, the deselect is a courtesy."""
    field = CardField()
    field.place(genuine())
    found = field.select_card()
    field.pull_after(5)
    assert verifier(field).check(field, *found).authentic


def test_securecard_a_card_that_asks_for_more_time_authenticates() -> None:
    check, field = tap(genuine(busy=0.06))  # 60 ms per command: more than its FWT of 39 ms
    assert check.authentic
    assert sum(1 for sent, _, _ in field.frames if sent[:1] == b"\xF2") == 4  # one S(WTX) per command


def test_securecard_a_card_that_stalls_for_ever_is_cut_at_the_budget() -> None:
    card = genuine(wtx=(59,) * 10_000, wtx_after=0.03)
    field = CardField()
    field.place(card)
    found = field.select_card()
    start = field.clock()
    check = verifier(field).check(field, *found)
    assert not check.authentic and f"{SECURE_BUDGET:g} s" in check.why
    assert field.clock() - start <= SECURE_BUDGET + 0.001


@pytest.mark.parametrize("noise", ["lost_command", "lost_answer", "garbled"])
@pytest.mark.parametrize("at", range(1, 6))
def test_securecard_rf_noise_is_recovered_within_the_tap(noise: str, at: int) -> None:
    """RATS lost on its way to the card (sent once more), then one frame lost or garbled
    at the select, either part of the authentication, GetCardUID or S(DESELECT)."""
    field = CardField()
    field.place(genuine())
    found = field.select_card()
    field.noise.extend([Noise("lost_command")] + [None] * at + [Noise(noise)])
    assert verifier(field).check(field, *found).authentic
    assert not field.noise
