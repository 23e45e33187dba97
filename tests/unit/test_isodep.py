"""ISO/IEC 14443-4 (ISO-DEP) on the reader's side, against the project's own emulated
cards (agent/devtools/emulated_ntag424.py) at the `transceive(frame, timeout)` port.

Every frame the reader sends is checked against what the standard allows:
within the 64-byte FIFO and the card's FSC, block numbers alternating, R(NAK)
or R(ACK) after an error as its rules 4 and 5 say. Time is emulated, so the
bounds on time are exact.
"""

from __future__ import annotations

import pytest

from agent.devtools.emulated_ntag424 import (
    NTAG424_ATS,
    GarbageClone,
    IsoDepCard,
    UidClone,
)
from agent.hardware.isodep import FIFO_BYTES, Ats, IsoDep, IsoDepError
from tests.support.card_field import CardField, Noise

UID = "04A1B2C3D4E5F6"
FWT = 4096 / 13.56e6 * 2**7  # NTAG 424's FWI 7: 38.7 ms
DELTA = 49152 / 13.56e6


def echo(apdu: bytes) -> bytes:
    """An application that answers an APDU with its bytes reversed and 90 00."""
    return apdu[::-1] + b"\x90\x00"


def sized(apdu: bytes) -> bytes:
    """An application that answers `n` (the APDU's first byte, times 2) bytes of data."""
    return bytes(i % 251 for i in range(apdu[0] * 2)) + b"\x90\x00"


def activated(card, budget: float = 1.0) -> tuple[CardField, IsoDep]:
    field = CardField()
    field.place(card)
    assert field.select_card() is not None
    link = IsoDep(field, budget=budget, clock=field.clock, sleep=field.sleep)
    link.activate()
    return field, link


def sent_blocks(field: CardField) -> list[bytes]:
    return [sent for sent, _, _ in field.frames]


def test_isodep_rats_asks_for_64_bytes_and_reads_the_ats() -> None:
    field, link = activated(IsoDepCard(UID, echo))
    assert field.frames[0][0] == b"\xE0\x50"  # FSDI 5 (64 bytes: the MFRC522's FIFO), CID 0
    assert link.ats == Ats.parse(NTAG424_ATS)
    assert (link.ats.fsc, round(link.ats.fwt, 5), round(link.ats.sfgt, 6)) == (128, round(FWT, 5), round(4096 / 13.56e6 * 2, 6))


@pytest.mark.parametrize("ats, fsc, fwi", [
    ("01", 32, 4),  # TL only: the defaults
    ("0200", 16, 4),  # T0 without TA, TB, TC
    ("0578008102", 256, 8),  # FSCI 8, FWI 8
    ("032F00", 256, 0),  # FSCI 15 is read as 8; TB alone
    ("0320F0", 16, 4),  # FWI 15 is RFU: the default
])
def test_isodep_ats_parsing(ats: str, fsc: int, fwi: int) -> None:
    parsed = Ats.parse(bytes.fromhex(ats))
    assert parsed.fsc == fsc and parsed.fwt == pytest.approx(4096 / 13.56e6 * 2**fwi)


@pytest.mark.parametrize("ats", ["", "05", "0277", "80", "06F7777102", "03F000"])
def test_isodep_malformed_ats_is_refused(ats: str) -> None:
    with pytest.raises(IsoDepError, match="ATS"):
        Ats.parse(bytes.fromhex(ats))


def test_isodep_exchange_and_block_numbers_alternate() -> None:
    card = IsoDepCard(UID, echo)
    field, link = activated(card)
    for apdu in (b"\x00\x01", b"\x02\x03\x04", b"\x05"):
        assert link.exchange(apdu) == apdu[::-1] + b"\x90\x00"
    assert [b[0] for b in sent_blocks(field)[1:]] == [0x02, 0x03, 0x02]
    assert card.apdus == [b"\x00\x01", b"\x02\x03\x04", b"\x05"]


@pytest.mark.parametrize("fsci, limit", [(0, 16), (7, FIFO_BYTES)])
def test_isodep_long_commands_are_chained_within_fsc_and_the_fifo(fsci: int, limit: int) -> None:
    card = IsoDepCard(UID, echo, ats=bytes((0x05, 0x70 | fsci, 0x77, 0x71, 0x02)))
    field, link = activated(card)
    apdu = bytes(range(150))
    assert link.exchange(apdu) == apdu[::-1] + b"\x90\x00"
    assert card.apdus == [apdu]
    blocks = [b for b in sent_blocks(field)[1:] if b[0] & 0xE2 == 0x02]  # the I-blocks
    assert all(len(block) + 2 <= limit for block in sent_blocks(field))  # PCB, INF and CRC_A in one frame
    assert len(blocks) == -(-150 // (limit - 3))
    assert [b[0] & 0x10 for b in blocks] == [0x10] * (len(blocks) - 1) + [0]  # chaining on all but the last


def test_isodep_long_answers_are_received_chained_within_fsd() -> None:
    card = IsoDepCard(UID, sized)
    field, link = activated(card)
    answer = link.exchange(b"\x64")  # 200 bytes and 90 00
    assert answer == bytes(i % 251 for i in range(200)) + b"\x90\x00"
    received = [a for _, a, _ in field.frames[1:]]
    assert all(len(a) + 2 <= FIFO_BYTES for a in received)  # card blocks with CRC_A fit FSD = 64
    acks = sent_blocks(field)[2:]
    assert len(acks) == 3 and all(b[0] & 0xF6 == 0xA2 for b in acks)  # R(ACK) for each chained block
    assert link.exchange(b"\x01") == b"\x00\x01\x90\x00"  # the block numbers are still in step


@pytest.mark.parametrize("noise", ["lost_answer", "lost_command", "garbled"])
def test_isodep_a_lost_or_garbled_frame_is_recovered_and_the_command_runs_once(noise: str) -> None:
    card = IsoDepCard(UID, echo)
    field, link = activated(card)
    field.noise.append(Noise(noise))
    assert link.exchange(b"\x11\x22") == b"\x22\x11\x90\x00"
    assert card.apdus == [b"\x11\x22"]
    assert sent_blocks(field)[2][0] & 0xF6 == 0xB2  # R(NAK) with the current block number (rule 4)
    if noise == "lost_command":  # the card answers R(ACK) with its own number: the block again (rule 6)
        assert field.frames[2][1] == b"\xA3" and sent_blocks(field)[3] == sent_blocks(field)[1]
    assert link.exchange(b"\x33") == b"\x33\x90\x00"


def test_isodep_a_chained_block_lost_is_asked_for_again_with_r_ack() -> None:
    card = IsoDepCard(UID, sized)
    field, link = activated(card)
    real = field.transceive
    calls = {"n": 0}

    def lossy(frame: bytes, timeout: float) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2:  # the card's second chained block
            field.noise.append(Noise("lost_answer"))
        return real(frame, timeout)

    field.transceive = lossy  # type: ignore[method-assign]
    assert len(link.exchange(b"\x50")) == 162
    acks = sent_blocks(field)[2:]
    assert acks[0] == acks[1] != acks[2]  # the same R(ACK) again (rule 5), not an R(NAK)
    assert all(block[0] & 0xF6 == 0xA2 for block in acks)
    assert card.apdus == [b"\x50"]


def test_isodep_gives_up_after_two_retransmissions() -> None:
    field, link = activated(IsoDepCard(UID, echo))
    field.noise.extend(Noise("lost_answer") for _ in range(3))
    with pytest.raises(IsoDepError, match="no answer"):
        link.exchange(b"\x01")
    assert len(field.frames) == 1 + 3


def test_isodep_wtx_extends_the_wait_the_card_asks_for() -> None:
    card = IsoDepCard(UID, echo, wtx=(10,), busy=FWT * 5)
    field, link = activated(card)
    assert link.exchange(b"\x01\x02") == b"\x02\x01\x90\x00"
    request, response = field.frames[1], field.frames[2]
    assert request[1] == b"\xF2\x0A" and response[0] == b"\xF2\x0A"  # S(WTX) answered with the same WTXM
    assert response[2] == pytest.approx(FWT * 10 + DELTA)
    assert link.exchange(b"\x03") == b"\x03\x90\x00"
    block = next(frame for frame in field.frames[3:] if frame[0][0] & 0xE2 == 0x02)  # the next I-block
    assert block[2] == pytest.approx(FWT + DELTA)  # the extension was for one answer only


def test_isodep_a_card_that_waits_for_ever_is_bounded_by_the_budget() -> None:
    card = IsoDepCard(UID, echo, wtx=(59,) * 1000, wtx_after=0.03)  # another S(WTX) every 30 ms
    field, link = activated(card, budget=0.5)
    start = field.clock()
    with pytest.raises(IsoDepError, match="0.5 s"):
        link.exchange(b"\x01")
    assert field.clock() - start <= 0.5 + 0.001
    assert card.apdus == []


def test_isodep_deselect_halts_the_card() -> None:
    card = IsoDepCard(UID, echo)
    field, link = activated(card)
    link.deselect()
    assert field.frames[-1][:2] == (b"\xC2", b"\xC2")
    assert card.state == "HALT"
    assert field.select_card() == (bytes.fromhex(UID), 0x20)  # WUPA wakes it again


def test_isodep_a_uid_clone_does_not_answer_rats() -> None:
    field = CardField()
    field.place(UidClone(UID))
    assert field.select_card() == (bytes.fromhex(UID), 0x20)
    with pytest.raises(IsoDepError, match="no ATS"):
        IsoDep(field, budget=1.0, clock=field.clock, sleep=field.sleep).activate()
    assert [sent for sent in sent_blocks(field)] == [b"\xE0\x50"] * 2  # RATS, then once more


@pytest.mark.parametrize("crc_ok", [True, False])
def test_isodep_a_clone_answering_garbage_is_refused(crc_ok: bool) -> None:
    field = CardField()
    field.place(GarbageClone(UID, crc_ok=crc_ok))
    field.select_card()
    with pytest.raises(IsoDepError, match="ATS"):
        IsoDep(field, budget=1.0, clock=field.clock, sleep=field.sleep).activate()


def test_isodep_invalid_blocks_from_the_card_are_errors() -> None:
    """A block the standard does not allow (an R(NAK) from a card, a chained answer
    where an R(ACK) is due) is never taken as an answer."""
    field, link = activated(IsoDepCard(UID, echo))
    real = field.transceive
    field.transceive = lambda frame, timeout: (real(frame, timeout), b"\xB2")[1]  # type: ignore[method-assign]
    with pytest.raises(IsoDepError):
        link.exchange(b"\x01")


def test_isodep_a_card_pulled_mid_exchange_is_no_answer() -> None:
    card = IsoDepCard(UID, sized)
    field, link = activated(card)
    field.pull_after(1)
    with pytest.raises(IsoDepError, match="no answer"):
        link.exchange(b"\x50")
