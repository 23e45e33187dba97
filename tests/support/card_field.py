"""The RF field of a reader at the `transceive(frame, timeout)` port, in emulated time,
for the tests of the ISO 14443-4 and NTAG 424 DNA layers without a reader chip.

The cards are the project's emulated NTAG 424 DNA and its clones
(agent/devtools/emulated_ntag424.py). `CardField` is the
reader's side at the port: it adds and checks CRC_A, moves an emulated clock by
each frame's air time and the card's own processing time (`answer_delay`), and
honours the timeout it is given; it also finds a card at layer 3
(`select_card`: WUPA, anticollision, SELECT), as a reader's poll does. The
same cards on the emulated MFRC522 go through the reader's real code path
(tests/integration/test_secure_cards.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.devtools.emulated_mfrc522 import (
    SELECT,
    WUPA,
    Card,
    crc_a,
    from_bits,
    to_bits,
)
from agent.hardware.isodep import BadFrame, NoAnswer

CARRIER_HZ = 13.56e6
BIT_SECONDS = 128 / CARRIER_HZ  # 106 kbit/s
FRAME_BITS_PER_BYTE = 9  # 8 data bits and odd parity


def air_seconds(octets: int) -> float:
    return octets * FRAME_BITS_PER_BYTE * BIT_SECONDS


@dataclass
class Noise:
    """RF trouble on the next exchange: the reader's frame never reaches the card
    (`lost_command`), the card's answer never reaches the reader (`lost_answer`), or
    it arrives with a bad CRC (`garbled`)."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ("lost_command", "lost_answer", "garbled"):
            raise ValueError(f"unknown noise {self.kind!r}")


class CardField:
    """The RF field of a reader, at the `transceive(frame, timeout)` port.

    Time is emulated (`clock`, `sleep`): a frame takes its air time, a card its
    processing time, and a frame nobody answers takes the whole timeout.
    `pull_after(n)` takes the cards out of the field after n more exchanges.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.cards: list[Card] = []
        self.noise: deque[Noise | None] = deque()  # one per exchange; None: a clean one
        self.frames: list[tuple[bytes, bytes | None, float]] = []  # (sent, answer without CRC_A, timeout)
        self.exchanges = 0
        self._pull_at: int | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def place(self, card: Card) -> Card:
        self.cards.append(card)
        card.power(True)
        return card

    def remove(self, card: Card) -> None:
        self.cards.remove(card)
        card.power(False)

    def pull_after(self, exchanges: int) -> None:
        self._pull_at = self.exchanges + exchanges

    def _air(self, bits: list[int]) -> list[list[int]]:
        return [a for card in self.cards if (a := card.receive(bits)) is not None]

    def transceive(self, frame: bytes, timeout: float) -> bytes:
        if self._pull_at is not None and self.exchanges >= self._pull_at:
            for card in list(self.cards):
                self.remove(card)
            self._pull_at = None
        self.exchanges += 1
        trouble = self.noise.popleft() if self.noise else None
        noise = trouble.kind if trouble is not None else None
        self.now += air_seconds(len(frame) + 2)
        answers = [] if noise == "lost_command" else self._air(to_bits(frame + crc_a(frame)))
        delay = max((card.answer_delay for card in self.cards), default=0.0)
        if not answers or noise == "lost_answer" or delay > timeout:
            self.frames.append((frame, None, timeout))
            self.now += timeout
            raise NoAnswer(f"no answer within {timeout * 1000:.1f} ms")
        bits = answers[0]
        self.now += delay + air_seconds(len(bits) // 8)
        if noise == "garbled":
            bits = bits[:-1] + [bits[-1] ^ 1]
        data = from_bits(bits)
        if len(bits) % 8 or len(answers) > 1 or len(data) < 3 or crc_a(data[:-2]) != data[-2:]:
            self.frames.append((frame, data, timeout))
            raise BadFrame("CRC error" if len(answers) == 1 else "collision")
        self.frames.append((frame, data[:-2], timeout))
        return data[:-2]

    def select_card(self) -> tuple[bytes, int] | None:
        """A reader's poll at layer 3: WUPA, then anticollision and SELECT at each cascade
        level; the UID and SAK of the one card now ACTIVE, or None."""
        self.now += air_seconds(1)
        if not self._air(to_bits(bytes((WUPA,)), 7)):
            return None
        uid = b""
        for level in SELECT:
            answers = self._air(to_bits(bytes((level, 0x20))))
            if len(answers) != 1 or len(answers[0]) != 40:
                return None
            part = from_bits(answers[0])
            frame = bytes((level, 0x70)) + part
            answers = self._air(to_bits(frame + crc_a(frame)))
            self.now += air_seconds(16)
            if len(answers) != 1:
                return None
            sak = from_bits(answers[0])[0]
            if not sak & 0x04:
                return uid + part[:4], sak
            uid += part[1:4]
        return None
