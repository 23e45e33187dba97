"""NTAG 424 DNA cards, and the clones of them an attacker can make, at the ISO 14443-4
level; and the RF field of a reader that speaks the `transceive(frame, timeout)` port.

The cards extend the ISO 14443-3 `Card` of agent/devtools/emulated_mfrc522.py:
they answer `receive(bits)` in air order with CRC_A, so the emulated MFRC522
can carry them too. Above layer 3 they follow ISO/IEC 14443-4 as a PICC must
(RATS and ATS, the block number rules C, D, E, 10 and 11, chaining both ways
within FSD and FSC, S(WTX), S(DESELECT)), and the NTAG 424 DNA application
checks every command as the card does (AuthenticateEV2First, MACs, the command
counter, Full-mode encryption, ChangeKey's CRC32). The card side is written
here on `cryptography` directly, not on agent.hardware.ntag424, so a mistake
there cannot be mirrored here; AN12196's vectors pin both.

`CardField` is the reader's side at the port: it adds and checks CRC_A, moves
an emulated clock by each frame's air time and the card's own processing time,
and honours the timeout it is given; it also finds a card at layer 3
(`select_card`: WUPA, anticollision, SELECT), as a reader's poll does.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.devtools.emulated_mfrc522 import (
    HLTA,
    SELECT,
    WUPA,
    Card,
    crc_a,
    from_bits,
    to_bits,
)
from agent.hardware.isodep import BadFrame, NoAnswer
from agent.hardware.reader import ThreadedReader
from agent.hardware.securecard import CardVerifier, SecureTaps

CARRIER_HZ = 13.56e6
BIT_SECONDS = 128 / CARRIER_HZ  # 106 kbit/s
FRAME_BITS_PER_BYTE = 9  # 8 data bits and odd parity
NTAG424_ATS = bytes.fromhex("067777710280")  # TL T0 TA TB TC T1: FSC 128, FWI 7 (38.7 ms), SFGI 1, CID
SIZES = (16, 24, 32, 40, 48, 64, 96, 128, 256)
NDEF_AID_SELECT = bytes.fromhex("00A4040C07D276000085010100")
HALT = bytes((HLTA, 0))


def air_seconds(octets: int) -> float:
    return octets * FRAME_BITS_PER_BYTE * BIT_SECONDS


# --- ISO 14443-4: the card's side -------------------------------------------------------


class IsoDepCard(Card):
    """A type A card with ISO 14443-4. `app(apdu) -> answer` is its application.

    `wtx` lists the WTXM of each S(WTX) the card asks for before it answers
    an APDU (one queue for all APDUs: (10, 10) asks twice, once), each after
    `wtx_after` seconds; `busy` is how long the card works on an APDU before
    it answers.
    `frames` counts the blocks it received.
    """

    SAK_BY_SIZE = {4: 0x20, 7: 0x20, 10: 0x20}  # b6: ISO 14443-4 compliant

    def __init__(self, uid: bytes | str, app: Callable[[bytes], bytes], ats: bytes = NTAG424_ATS,
                 wtx: tuple[int, ...] = (), wtx_after: float = 0.0, busy: float = 0.002) -> None:
        super().__init__(uid)
        self.app, self.ats, self.busy = app, ats, busy
        self.wtx, self.wtx_after = deque(wtx), wtx_after
        self.delay = 0.0  # the processing time of the answer just given
        self.frames = 0
        self.apdus: list[bytes] = []
        self._reset_protocol()

    def _reset_protocol(self) -> None:
        self.block = 1  # rule C
        self.fsd = 256
        self.last: bytes | None = None
        self.chain_in = b""
        self.chain_out = b""
        self.waiting: bytes | None = None  # an APDU answered after the S(WTX) exchange

    def power(self, on: bool) -> None:
        super().power(on)
        self._reset_protocol()

    @property
    def fsc(self) -> int:
        fsci = self.ats[1] & 0x0F if len(self.ats) > 1 else 2
        return SIZES[min(fsci, 8)]

    def receive(self, bits: list[int]) -> list[int] | None:
        self.delay = 0.0
        if self.state not in ("ACTIVE", "PROTOCOL") or len(bits) % 8:
            return super().receive(bits)
        frame = from_bits(bits)
        if len(frame) < 3 or crc_a(frame[:-2]) != frame[-2:]:
            return None if self.state == "PROTOCOL" else super().receive(bits)
        data = frame[:-2]
        if self.state == "ACTIVE":
            if len(data) == 2 and data[0] == 0xE0:
                return self._rats(data[1])
            return super().receive(bits)
        self.frames += 1
        answer = self.block_in(data)
        return None if answer is None else to_bits(answer + crc_a(answer))

    def _rats(self, param: int) -> list[int] | None:
        self.state, self.fsd = "PROTOCOL", SIZES[min(param >> 4, 8)]
        return to_bits(self.ats + crc_a(self.ats)) if self.ats else None

    def _send(self, block: bytes) -> bytes:
        self.last = block
        return block

    def block_in(self, block: bytes) -> bytes | None:
        """A block from the reader -> the card's block, or None (an invalid block is ignored)."""
        pcb = block[0]
        if pcb & 0xE2 == 0x02 and not pcb & 0x0C:  # an I-block, no CID, no NAD
            self.block ^= 1  # rule D
            if pcb & 0x10:
                self.chain_in += block[1:]
                return self._send(bytes((0xA2 | self.block,)))
            apdu, self.chain_in = self.chain_in + block[1:], b""
            return self._command(apdu)
        if pcb & 0xE6 == 0xA2 and len(block) == 1:  # an R-block
            nak, number = bool(pcb & 0x10), pcb & 1
            if number == self.block:
                return self.last  # rule 10: the reader lost our block
            if nak:
                return self._send(bytes((0xA2 | self.block,)))  # rule 11
            self.block ^= 1  # rule E: the reader acknowledges our chained block
            return self._chained() if self.chain_out else self.last
        if pcb == 0xF2 and self.waiting is not None and len(block) == 2:  # S(WTX) response
            apdu, self.waiting = self.waiting, None
            return self._command(apdu)
        if pcb == 0xC2 and len(block) == 1:  # S(DESELECT)
            self.state, self.from_halt = "HALT", True
            self._reset_protocol()
            return b"\xC2"
        return None

    def _command(self, apdu: bytes) -> bytes:
        if self.wtx:
            self.waiting, self.delay = apdu, self.wtx_after
            return self._send(bytes((0xF2, self.wtx.popleft())))
        self.apdus.append(apdu)
        self.delay = self.busy
        self.chain_out = self.app(apdu)
        return self._chained()

    def _chained(self) -> bytes:
        room = self.fsd - 3
        part, self.chain_out = self.chain_out[:room], self.chain_out[room:]
        more = 0x10 if self.chain_out else 0
        return self._send(bytes((0x02 | more | self.block,)) + part)


class UidClone(Card):
    """A "magic" card with a copied UID (and SAK): all that a UID-only reader sees.
    It knows nothing of ISO 14443-4: RATS gets no answer."""

    SAK_BY_SIZE = IsoDepCard.SAK_BY_SIZE


class GarbageClone(Card):
    """A clone that answers RATS, and every frame after it, with noise (`crc_ok`:
    framed with a valid CRC_A, so that only the protocol above can tell)."""

    SAK_BY_SIZE = IsoDepCard.SAK_BY_SIZE

    def __init__(self, uid: bytes | str, crc_ok: bool = True) -> None:
        super().__init__(uid)
        self.crc_ok, self._noise = crc_ok, b"noise"

    def receive(self, bits: list[int]) -> list[int] | None:
        frame = from_bits(bits)
        if self.state in ("ACTIVE", "PROTOCOL") and len(bits) >= 16 and not len(bits) % 8 and frame[:2] != HALT:
            self.state = "PROTOCOL"
            self._noise = zlib.crc32(self._noise).to_bytes(4, "big") + self._noise[:8]
            data = self._noise[:7]
            return to_bits(data + (crc_a(data) if self.crc_ok else b"\x00\x00"))
        return super().receive(bits)


# --- the NTAG 424 DNA application ---------------------------------------------------------


def _cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def _mact(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()[1::2]


def _full_cmac(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


@dataclass
class _Session:
    key_no: int
    ti: bytes
    enc: bytes
    mac: bytes
    counter: int = 0

    def iv(self, label: bytes) -> bytes:
        return _cbc(self.enc, bytes(16), label + self.ti + self.counter.to_bytes(2, "little") + bytes(8), True)


class Ntag424App:
    """The NDEF application of an NTAG 424 DNA, as the card runs it.

    `keys` are the five application keys (factory: all zero). `reported_uid`
    is what GetCardUID answers (a card that lies about it); `mac_fault` flips
    a bit of the next MAC the card sends.
    """

    def __init__(self, uid: bytes, keys: dict[int, bytes] | None = None,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.uid = uid
        self.keys = {n: bytes(16) for n in range(5)} | (keys or {})
        self.versions = dict.fromkeys(range(5), 0)
        self.reported_uid = uid
        self.mac_fault = False
        self.random = random
        self.selected = False
        self.pending: tuple[int, bytes] | None = None
        self.session: _Session | None = None

    def __call__(self, apdu: bytes) -> bytes:
        if apdu == NDEF_AID_SELECT:
            self.selected, self.pending, self.session = True, None, None
            return b"\x90\x00"
        if len(apdu) < 5 or apdu[0] != 0x90 or apdu[2:4] != b"\x00\x00":
            return b"\x6E\x00" if apdu[:1] != b"\x00" else b"\x6A\x82"
        ins, data = apdu[1], apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
        if not self.selected:
            return b"\x91\xCA"
        if self.pending is not None and ins != 0xAF:
            self.pending = None
        handlers = {0x71: self._auth_part1, 0xAF: self._auth_part2, 0x51: self._get_card_uid, 0xC4: self._change_key}
        if ins not in handlers:
            return b"\x91\x1C"
        return handlers[ins](data)

    def _auth_part1(self, data: bytes) -> bytes:
        self.session = None
        if len(data) < 2:
            return b"\x91\x7E"
        if data[0] not in self.keys:
            return b"\x91\x40"
        rnd_b = self.random(16)
        self.pending = (data[0], rnd_b)
        return _cbc(self.keys[data[0]], bytes(16), rnd_b, True) + b"\x91\xAF"

    def _auth_part2(self, data: bytes) -> bytes:
        if self.pending is None:
            return b"\x91\xCA"
        (key_no, rnd_b), self.pending = self.pending, None
        if len(data) != 32:
            return b"\x91\x7E"
        key = self.keys[key_no]
        plain = _cbc(key, bytes(16), data, False)
        rnd_a = plain[:16]
        if plain[16:] != rnd_b[1:] + rnd_b[:1]:
            return b"\x91\xAE"
        ti = self.random(4)
        mixed = bytes(a ^ b for a, b in zip(rnd_a[2:8], rnd_b[:6]))
        sv = b"\x00\x01\x00\x80" + rnd_a[:2] + mixed + rnd_b[6:] + rnd_a[8:]
        self.session = _Session(key_no, ti, _full_cmac(key, b"\xA5\x5A" + sv), _full_cmac(key, b"\x5A\xA5" + sv))
        answer = ti + rnd_a[1:] + rnd_a[:1] + bytes(12)
        return _cbc(key, bytes(16), answer, True) + b"\x91\x00"

    def _mac(self, session: _Session, data: bytes) -> bytes:
        mac = _mact(session.mac, data)
        if self.mac_fault:
            self.mac_fault, mac = False, bytes((mac[0] ^ 1,)) + mac[1:]
        return mac

    def _get_card_uid(self, data: bytes) -> bytes:
        s = self.session
        if s is None:
            return b"\x91\xAE"
        if data != _mact(s.mac, b"\x51" + s.counter.to_bytes(2, "little") + s.ti):
            self.session = None
            return b"\x91\x1E"
        s.counter += 1
        padded = (self.reported_uid + b"\x80").ljust(16, b"\x00")
        encrypted = _cbc(s.enc, s.iv(b"\x5A\xA5"), padded, True)
        return encrypted + self._mac(s, b"\x00" + s.counter.to_bytes(2, "little") + s.ti + encrypted) + b"\x91\x00"

    def _change_key(self, data: bytes) -> bytes:
        s = self.session
        if s is None or s.key_no != 0:
            return b"\x91\x9D"
        if len(data) != 41:
            return b"\x91\x7E"
        key_no, encrypted, mac = data[0], data[1:33], data[33:]
        if mac != _mact(s.mac, b"\xC4" + s.counter.to_bytes(2, "little") + s.ti + bytes((key_no,)) + encrypted):
            self.session = None
            return b"\x91\x1E"
        if key_no not in self.keys:
            return b"\x91\x40"
        plain = _cbc(s.enc, s.iv(b"\xA5\x5A"), encrypted, False)
        if key_no == s.key_no:
            new, end = plain[:16], 17
        else:
            new = bytes(a ^ b for a, b in zip(plain[:16], self.keys[key_no]))
            crc = (zlib.crc32(new) ^ 0xFFFFFFFF).to_bytes(4, "little")
            end = 21
            if plain[17:21] != crc:
                self.session = None
                return b"\x91\x1E"
        if plain[end:] != b"\x80" + bytes(31 - end):
            self.session = None
            return b"\x91\x1E"
        self.keys[key_no], self.versions[key_no] = new, plain[16]
        s.counter += 1
        if key_no == s.key_no:
            self.session = None
            return b"\x91\x00"
        return self._mac(s, b"\x00" + s.counter.to_bytes(2, "little") + s.ti) + b"\x91\x00"


class Ntag424(IsoDepCard):
    """A genuine NTAG 424 DNA: ISO 14443-4 and its NDEF application (`app`)."""

    def __init__(self, uid: bytes | str, keys: dict[int, bytes] | None = None, *,
                 random: Callable[[int], bytes] = os.urandom, **iso: object) -> None:
        uid = bytes.fromhex(uid) if isinstance(uid, str) else uid
        self.application = Ntag424App(uid, keys, random)
        super().__init__(uid, self.application, **iso)


class KeylessClone(IsoDepCard):
    """A clone that frames perfectly and plays the NTAG 424 application, but has no
    key: it answers the authentication with what it has (`answers`: random bytes,
    or a genuine card's answers recorded earlier, replayed)."""

    def __init__(self, uid: bytes | str, answers: list[bytes] | None = None) -> None:
        self.recorded = deque(answers or [])
        super().__init__(uid, self._answer)

    def _answer(self, apdu: bytes) -> bytes:
        if apdu == NDEF_AID_SELECT:
            return b"\x90\x00"
        if self.recorded:
            return self.recorded.popleft()
        if apdu[1:2] == b"\x71":
            return os.urandom(16) + b"\x91\xAF"
        return os.urandom(32) + b"\x91\x00"


# --- the reader's side of the port ------------------------------------------------------------


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
    `on_exchange`, when set, runs before each exchange (a test may block there).
    A reader's thread holds `lock` for a poll; a test's place and remove wait for it.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.closed = False
        self.now = 0.0
        self.cards: list[Card] = []
        self.noise: deque[Noise | None] = deque()  # one per exchange; None: a clean one
        self.frames: list[tuple[bytes, bytes | None, float]] = []  # (sent, answer without CRC_A, timeout)
        self.exchanges = 0
        self._pull_at: int | None = None
        self.on_exchange: Callable[[], None] | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def place(self, card: Card) -> Card:
        with self.lock:
            self.cards.append(card)
            card.power(True)
        return card

    def remove(self, card: Card) -> None:
        with self.lock:
            self.cards.remove(card)
            card.power(False)

    def pull_after(self, exchanges: int) -> None:
        self._pull_at = self.exchanges + exchanges

    def reset(self) -> None:
        """The field off and on again: every card back to IDLE."""
        for card in self.cards:
            card.power(False)
            card.power(True)
        self.now += 0.005

    def _air(self, bits: list[int]) -> list[list[int]]:
        return [a for card in self.cards if (a := card.receive(bits)) is not None]

    def transceive(self, frame: bytes, timeout: float) -> bytes:
        if self.on_exchange is not None:
            self.on_exchange()
        if self._pull_at is not None and self.exchanges >= self._pull_at:
            for card in list(self.cards):
                self.remove(card)
            self._pull_at = None
        self.exchanges += 1
        trouble = self.noise.popleft() if self.noise else None
        noise = trouble.kind if trouble is not None else None
        self.now += air_seconds(len(frame) + 2)
        answers = [] if noise == "lost_command" else self._air(to_bits(frame + crc_a(frame)))
        delay = max((getattr(card, "delay", 0.0) for card in self.cards), default=0.0)
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

    def close(self) -> None:
        self.closed = True

    def halt(self) -> None:
        """HLTA, as a reader sends after each poll; a card in the protocol state ignores it."""
        self._air(to_bits(HALT + crc_a(HALT)))


class FieldReader(ThreadedReader):
    """A secure reader on a CardField, wired as the MFRC522 reader's tap path will be:
    each poll selects a card (ISO 14443-3); a card that has just arrived is checked
    on this thread (SecureTaps) and tapped with its CardCheck; then the card is
    halted, or, after a failed check, the field is switched off and on (a card
    left in the protocol answers no WUPA)."""

    name = "card-field"
    authenticates = True

    def __init__(self, field: CardField, verifier: CardVerifier, rearm: float = 0.5, poll: float = 0.01,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.field, self.poll = field, poll
        self.taps = SecureTaps(verifier, rearm, clock)

    def _run(self) -> None:
        self._answering()
        while not self._stop.is_set():
            with self.field.lock:
                found = self.field.select_card()
                check = self.taps.sighting(self.field, *found) if found is not None else None
                if check is not None and not check.authentic:
                    self.field.reset()
                else:
                    self.field.halt()
            if check is not None:
                self._tap(check.badge, check)
            self._stop.wait(self.poll)
