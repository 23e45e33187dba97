"""The reader-head line protocol, spoken by the agent and by the head's firmware.

This very file runs on the Pico too (firmware/pico/install.sh copies it onto
the board), so it is written in the Python that CPython and MicroPython share:
no imports, no f-strings, no variable annotations, no bytes.hex().

A message is one line of printable ASCII:

    FP1 <TYPE> <field> ... *<CRC>\\n

`FP1` is the framing (line, spaces, checksum), fixed for good; CRC is the
CRC-16/CCITT-FALSE of every byte before ` *`, as 4 uppercase hex digits. A
trailing \\r is ignored. Fields are non-empty and hold no space or `*`.

    head -> agent   HELLO <firmware-version> <protocol>   after boot, and again
                                                          whenever the agent is
                                                          heard after a silence
                    BEAT <uptime-s> <dropped>              every second
                    CARD <uid-hex>                         every read of a card in the field
    agent -> head   BEAT <uptime-s> <dropped>              every second
                    SHOW <signal>                          granted, refused, ended, warning, idle, offline,
                                                          enrolled, inducted, out_of_order

The head debounces nothing: it sends CARD for every successful read (about
ten a second while a card is held) and the agent turns those sightings into
one tap per presentation, with the rearm time from the machine's config.
Lines that are not printable ASCII, too long, badly checksummed, of another
framing, of an unknown type or short of fields are dropped and counted;
extra fields are ignored, so a newer peer may append some.
"""

PROTOCOL = 1
MAGIC = "FP1"
MAX_LINE = 120
BEAT_INTERVAL_S = 1.0
# A peer is taken as gone after this long without a valid line.
SILENCE_S = 3.0

HELLO = "HELLO"
BEAT = "BEAT"
CARD = "CARD"
SHOW = "SHOW"
# The least number of fields of each type.
FIELDS = {HELLO: 2, BEAT: 2, CARD: 1, SHOW: 1}

SIGNALS = ("granted", "refused", "ended", "warning", "idle", "offline",
           "enrolled", "inducted", "out_of_order")  # at the machine; a head of an older firmware ignores them
# Signals that last until the next one; the others play once and end.
STEADY = ("granted", "warning", "idle", "offline")

DROP_REASONS = ("garbage", "overlong", "checksum", "unknown")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, no reflection."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode(kind: str, *fields) -> bytes:
    """One line, ready to write: encode(CARD, "04A1B2C3") -> b"FP1 CARD 04A1B2C3 *XXXX\\n"."""
    parts = [MAGIC, kind]
    for field in fields:
        text = str(field)
        if not text or " " in text or "*" in text or not _printable(text.encode()):
            raise ValueError("bad field %r" % (field,))
        parts.append(text)
    body = " ".join(parts)
    return ("%s *%04X\n" % (body, crc16(body.encode()))).encode()


def _printable(data: bytes) -> bool:
    for byte in data:
        if byte < 0x20 or byte > 0x7E:
            return False
    return True


class Decoder:
    """Bytes as they arrive -> messages `(type, [fields])`; `dropped` counts, by
    reason, the lines it refused. A line starts after a newline, so after noise
    the decoder is back in step at the next line."""

    def __init__(self):
        self._line = bytearray()
        self._overlong = False
        self.dropped = {}
        for reason in DROP_REASONS:
            self.dropped[reason] = 0

    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def feed(self, data: bytes) -> list:
        messages = []
        for byte in data:
            if byte != 0x0A:
                if len(self._line) < MAX_LINE:
                    self._line.append(byte)
                else:
                    self._overlong = True
                continue
            line, overlong = bytes(self._line), self._overlong
            self._line, self._overlong = bytearray(), False
            if overlong:
                self.dropped["overlong"] += 1
                continue
            message = self._decode(line)
            if message is not None:
                messages.append(message)
        return messages

    def _decode(self, line: bytes):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return None  # a blank line is no message and no error
        star = line.rfind(b" *")
        if not _printable(line) or star < 0:
            self.dropped["garbage"] += 1
            return None
        body, crc = line[:star], line[star + 2:].decode()
        if crc != "%04X" % crc16(body):
            self.dropped["checksum"] += 1
            return None
        parts = body.decode().split(" ")
        if len(parts) < 2 or parts[0] != MAGIC or "" in parts or "*" in body.decode():
            self.dropped["garbage"] += 1
            return None
        kind, fields = parts[1], parts[2:]
        if kind not in FIELDS or len(fields) < FIELDS[kind]:
            self.dropped["unknown"] += 1
            return None
        return kind, fields
