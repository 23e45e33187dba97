"""RDM6300 and similar 125 kHz UART readers (EM4100 tags), 9600 8N1.

While a tag is in the field the reader sends, about every 100 ms, a frame
`STX(0x02) + 10 hex digits (5 tag bytes) + 2 hex digits (XOR of the 5 bytes) + ETX(0x03)`.
Wiring and setup: docs/reader-serial.md.
"""

from __future__ import annotations

from gpiozero import Factory

from agent.config import ReaderConfig
from agent.core.model import badge_from_bytes
from agent.hardware.reader import TapDebouncer
from agent.hardware.serialport import SerialReader

STX, ETX = 0x02, 0x03
BODY_LENGTH = 12  # 10 hex digits of tag, 2 of checksum


def decode_body(body: bytes) -> str | None:
    """The badge in a frame's body (between STX and ETX), or None if it is not a valid one."""
    if len(body) != BODY_LENGTH:
        return None
    try:
        raw = bytes.fromhex(body.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if len(raw) != 6:  # fromhex skips whitespace; twelve characters must be six bytes
        return None
    checksum = 0
    for byte in raw[:5]:
        checksum ^= byte
    return badge_from_bytes(raw[:5]) if checksum == raw[5] else None


class FrameParser:
    """Bytes as they arrive -> badges. Partial frames, bad checksums and noise are
    dropped (and counted); parsing starts afresh at every STX."""

    def __init__(self) -> None:
        self._body: bytearray | None = None  # None: between frames, waiting for STX
        self.dropped = 0

    def feed(self, data: bytes) -> list[str]:
        badges = []
        for byte in data:
            if byte == STX:
                if self._body is not None:
                    self.dropped += 1
                self._body = bytearray()
            elif self._body is None:
                continue
            elif byte == ETX:
                badge = decode_body(bytes(self._body))
                self._body = None
                if badge is None:
                    self.dropped += 1
                else:
                    badges.append(badge)
            else:
                self._body.append(byte)
                if len(self._body) > BODY_LENGTH:
                    self._body = None
                    self.dropped += 1
        return badges


class RDM6300Reader(SerialReader):
    name = "rdm6300"

    def __init__(self, config: ReaderConfig, pins: Factory | None = None) -> None:
        super().__init__(config)
        self._parser = FrameParser()
        self._debouncer = TapDebouncer(config.rearm)

    @property
    def dropped(self) -> int:
        """Frames dropped so far: bad checksums, partial frames."""
        return self._parser.dropped

    @property
    def counters(self) -> dict[str, int]:
        return {"dropped": self.dropped}

    def _received(self, data: bytes, now: float) -> None:
        dropped = self._parser.dropped
        for badge in self._parser.feed(data):
            if self._debouncer.seen(badge, now):
                self._tap(badge)
        if self._parser.dropped > dropped:  # a garbled frame: the module sends only while a tag is there
            self._debouncer.present(now)
