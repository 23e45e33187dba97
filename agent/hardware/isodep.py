"""ISO/IEC 14443-4 (ISO-DEP), the reader's side: APDUs to a card and back in blocks.

Pure protocol logic over a narrow port, `Transceiver.transceive(frame, timeout)`:
the reader chip sends one frame (the chip adds CRC_A), and returns the card's
answer (CRC_A checked and removed), raises NoAnswer when none comes within
`timeout` seconds, or BadFrame for a CRC, parity or framing error. The
MFRC522's transceive (agent/hardware/mfrc522chip.py) and the tests' emulated
field (tests/support/card_field.py) both speak it.

What the standard asks of the reader (PCD), ISO/IEC 14443-4 §5 and §7:
- activation: RATS with FSDI 5 (the reader takes frames of 64 bytes, its
  FIFO) and CID 0; the ATS gives the card's frame size FSC, its frame
  waiting time FWT and the guard time SFGT before the first block;
- I-blocks whose block number alternates (rules A, B), chained both ways:
  a command longer than a frame goes in blocks of at most min(FSC, 64)
  bytes, each acknowledged by R(ACK); a chained answer is asked for block
  by block with R(ACK) (rule 2);
- after a timeout or a bad frame: R(NAK) (rule 4), or R(ACK) while the card
  chains (rule 5); an R(ACK) with the other block number means the card
  never had the last I-block, which is sent again (rule 6); two
  retransmissions at most;
- S(WTX): the card asks for WTXM times FWT for its next answer, granted by
  echoing it; S(DESELECT) ends the session and halts the card.

A card may ask for more time for ever, or answer slowly on purpose: every
wait is also cut at the deadline `budget` seconds after the link is made,
so a tap never takes the reader's thread for longer than that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

CARRIER_HZ = 13.56e6
FIFO_BYTES = 64  # the MFRC522's FIFO: the largest frame, CRC_A included, either way
FSDI = 5  # announced in RATS: the reader takes frames of 64 bytes
FRAME_SIZES = (16, 24, 32, 40, 48, 64, 96, 128, 256)  # FSCI/FSDI 0-8
FWT_UNIT = 256 * 16 / CARRIER_HZ  # FWT = FWT_UNIT * 2**FWI, SFGT alike
FWT_ACTIVATION = 71680 / CARRIER_HZ  # the card's longest time to answer RATS (5.3 ms)
DELTA_FWT = 49152 / CARRIER_HZ  # the reader's margin on every frame waiting time (3.6 ms)
FWT_MAX = FWT_UNIT * 2**14  # 4.9 s: no wait is ever longer, WTX included
RETRIES = 2  # retransmissions of a block before the reader gives up
OVERHEAD = 3  # PCB and CRC_A around a block's INF

DESELECT = b"\xC2"
WTX = 0xF2


class NoAnswer(TimeoutError):
    """The port heard nothing within the timeout."""


class BadFrame(ValueError):
    """The port heard a frame with a CRC, parity or framing error, or a collision."""


class IsoDepError(Exception):
    """The card does not speak ISO 14443-4 as it must, stopped answering, or took too long."""


class Transceiver(Protocol):
    def transceive(self, frame: bytes, timeout: float) -> bytes:
        """Send `frame`; the card's answer within `timeout` seconds (NoAnswer, BadFrame)."""


@dataclass(frozen=True)
class Ats:
    """What a card's Answer To Select says about its link (ISO 14443-4 §5.2)."""

    raw: bytes
    fsc: int  # the longest frame the card takes, CRC_A included
    fwt: float  # seconds the card may take to answer a block
    sfgt: float  # seconds to wait after the ATS before the first block

    @classmethod
    def parse(cls, data: bytes) -> Ats:
        if not data or data[0] != len(data):
            raise IsoDepError(f"a malformed ATS ({data.hex().upper() or 'empty'}): TL is not its length")
        fsci, fwi, sfgi = 2, 4, 0  # the defaults when T0 or TB is absent
        if len(data) > 1:
            t0 = data[1]
            interfaces = [bit for bit in (0x10, 0x20, 0x40) if t0 & bit]
            if t0 & 0x80 or len(data) < 2 + len(interfaces):
                raise IsoDepError(f"a malformed ATS ({data.hex().upper()}): T0 does not match its bytes")
            fsci = t0 & 0x0F
            if t0 & 0x20:
                tb = data[2 + interfaces.index(0x20)]
                fwi, sfgi = tb >> 4, tb & 0x0F
        fwi = 4 if fwi == 15 else fwi  # 15 is RFU: read as the default
        sfgi = 0 if sfgi == 15 else sfgi
        return cls(data, FRAME_SIZES[min(fsci, 8)], FWT_UNIT * 2**fwi, FWT_UNIT * 2**sfgi if sfgi else 0.0)


def _is_i_block(block: bytes) -> bool:
    return len(block) >= 1 and block[0] & 0xEE == 0x02  # no CID, no NAD: the reader uses neither


def _is_ack(block: bytes) -> bool:
    return len(block) == 1 and block[0] & 0xFE == 0xA2


class IsoDep:
    """An ISO-DEP link to the card the reader has just selected (ISO 14443-3 ACTIVE).

    `clock` and `sleep` (monotonic seconds) are the emulated field's in tests.
    """

    def __init__(self, port: Transceiver, budget: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._port, self._clock, self._sleep = port, clock, sleep
        self.budget = budget
        self._deadline = clock() + budget
        self.ats: Ats | None = None
        self._block = 0  # the reader's block number (rule A)

    def _transceive(self, frame: bytes, fwt: float) -> bytes:
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise IsoDepError(f"the card took longer than the {self.budget:g} s a check may take")
        return self._port.transceive(frame, min(fwt + DELTA_FWT, remaining))

    def activate(self) -> Ats:
        """RATS, and the card's ATS: the card enters the protocol."""
        rats = bytes((0xE0, FSDI << 4))
        why = ""
        for _ in range(2):  # a RATS the card did not hear may be sent once more
            try:
                answer = self._transceive(rats, FWT_ACTIVATION)
            except (NoAnswer, BadFrame) as err:
                why = str(err)
                continue
            self.ats = Ats.parse(answer)
            if self.ats.sfgt:  # the guard time the card asks for, never past the deadline
                self._sleep(min(self.ats.sfgt, max(0.0, self._deadline - self._clock())))
            return self.ats
        raise IsoDepError(f"no ATS: the card does not speak ISO 14443-4 ({why})")

    def exchange(self, apdu: bytes) -> bytes:
        """Send a command APDU and return the card's response APDU."""
        assert self.ats is not None, "activate() first"
        room = min(self.ats.fsc, FIFO_BYTES) - OVERHEAD
        chunks = [apdu[at:at + room] for at in range(0, len(apdu), room)] or [b""]
        for index, chunk in enumerate(chunks):
            chaining = index < len(chunks) - 1
            block = bytes((0x02 | (0x10 if chaining else 0) | self._block,)) + chunk
            reply = self._request(block, bytes((0xB2 | self._block,)))  # R(NAK) on an error
            if chaining:
                if not (_is_ack(reply) and reply[0] & 1 == self._block):
                    raise IsoDepError(f"the card answered {reply.hex().upper()} to a chained block, not R(ACK)")
                self._block ^= 1  # rule B
        answer = bytearray()
        while True:
            if not _is_i_block(reply) or reply[0] & 1 != self._block:
                raise IsoDepError(f"the card answered {reply.hex().upper()} where an I-block was due")
            answer += reply[1:]
            self._block ^= 1  # rule B
            if not reply[0] & 0x10:
                return bytes(answer)
            ack = bytes((0xA2 | self._block,))
            reply = self._request(ack, ack)  # rule 2; and rule 5 on an error

    def _request(self, block: bytes, recovery: bytes) -> bytes:
        """Send `block`; the card's I-block or R(ACK) for it, after S(WTX) requests are
        granted and errors recovered (with `recovery`, then the block itself on rule 6)."""
        frame, fwt, errors = block, self.ats.fwt, 0
        while True:
            try:
                reply = self._transceive(frame, fwt)
            except (NoAnswer, BadFrame) as err:
                reply, why = b"", str(err)
            fwt = self.ats.fwt
            if len(reply) == 2 and reply[0] == WTX and 1 <= reply[1] & 0x3F <= 59:
                frame, fwt = reply, min(self.ats.fwt * (reply[1] & 0x3F), FWT_MAX)
                continue  # granted: the deadline bounds how often
            if _is_i_block(reply) or (_is_ack(reply) and reply[0] & 1 == self._block):
                return reply
            if _is_ack(reply):  # rule 6: an R(ACK) with the other number: the card never had our block
                frame, why = block, "the card did not get the block"
            else:
                frame = recovery
                why = f"invalid block {reply.hex().upper()}" if reply else why
            errors += 1
            if errors > RETRIES:
                raise IsoDepError(f"no answer from the card after {RETRIES} retransmissions ({why})")

    def deselect(self) -> None:
        """S(DESELECT): the card leaves the protocol and halts."""
        for _ in range(2):
            try:
                if self._transceive(DESELECT, self.ats.fwt if self.ats else FWT_ACTIVATION) == DESELECT:
                    return
            except (NoAnswer, BadFrame):
                continue
        raise IsoDepError("no answer to S(DESELECT)")
