"""NTAG 424 DNA cards, and the clones of them an attacker can make, at the ISO 14443-4
level: for the tests and for `fabpass bench` (a secure tap's card to relay).

The cards extend the ISO 14443-3 `Card` of agent/devtools/emulated_mfrc522.py:
they answer `receive(bits)` in air order with CRC_A, so the emulated MFRC522
carries them as it carries any card, and a card's processing time (and the
time an S(WTX) asked for) is its `answer_delay`, which the chip honours. Above
layer 3 they follow ISO/IEC 14443-4 as a PICC must (RATS and ATS, the block
number rules C, D, E, 10 and 11, chaining both ways within FSD and FSC,
S(WTX), S(DESELECT)), and the NTAG 424 DNA application checks every command as
the card does (AuthenticateEV2First, MACs, the command counter, Full-mode
encryption, ChangeKey's CRC32). The card side is written here on
`cryptography` directly, not on agent.hardware.ntag424, so a mistake there
cannot be mirrored here; AN12196's vectors pin both.
"""

from __future__ import annotations

import math
import os
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.devtools.emulated_mfrc522 import (
    CARRIER_HZ,
    HLTA,
    Card,
    crc_a,
    from_bits,
    to_bits,
)

COMMAND_WORK = 0.002  # seconds a card works on a command, by default (an assumption: NXP publishes none)
NTAG424_ATS = bytes.fromhex("067777710280")  # TL T0 TA TB TC T1: FSC 128, FWI 7 (38.7 ms), SFGI 1, CID
SIZES = (16, 24, 32, 40, 48, 64, 96, 128, 256)
NDEF_AID_SELECT = bytes.fromhex("00A4040C07D276000085010100")
HALT = bytes((HLTA, 0))


# --- ISO 14443-4: the card's side -------------------------------------------------------


class IsoDepCard(Card):
    """A type A card with ISO 14443-4. `app(apdu) -> answer` is its application.

    `busy` is how long the card works on an APDU before it answers; when that
    is longer than the frame waiting time its ATS gives, it first asks for the
    time it needs with an S(WTX), as ISO 14443-4 §7.3 wants (unless not
    `asks_for_time`: a card too slow for its own FWT). `wtx` lists the WTXM of
    S(WTX) requests scripted beyond those (one queue for all APDUs: (10, 10)
    asks twice, once), each after `wtx_after` seconds. `ready_after`: as for
    any `Card`, its start-up in the field. `frames` counts the blocks it
    received, `extensions` the S(WTX) it sent.
    """

    SAK_BY_SIZE = {4: 0x20, 7: 0x20, 10: 0x20}  # b6: ISO 14443-4 compliant

    def __init__(self, uid: bytes | str, app: Callable[[bytes], bytes], ats: bytes = NTAG424_ATS,
                 wtx: tuple[int, ...] = (), wtx_after: float = 0.0, busy: float = COMMAND_WORK,
                 asks_for_time: bool = True, ready_after: float = 0.0) -> None:
        super().__init__(uid, ready_after)
        self.app, self.ats, self.busy, self.asks_for_time = app, ats, busy, asks_for_time
        self.wtx, self.wtx_after = deque(wtx), wtx_after
        self.frames = self.extensions = 0
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

    @property
    def fwt(self) -> float:
        """Its frame waiting time: TB's FWI (4 without TB), 256 * 16 / fc * 2^FWI."""
        t0 = self.ats[1] if len(self.ats) > 1 else 0
        fwi = self.ats[2 + bool(t0 & 0x10)] >> 4 if t0 & 0x20 else 4
        return 4096 / CARRIER_HZ * 2**fwi

    def receive(self, bits: list[int]) -> list[int] | None:
        self.answer_delay = 0.0  # the processing time of the answer about to be given
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
            return self._command(apdu, granted=True)
        if pcb == 0xC2 and len(block) == 1:  # S(DESELECT)
            self.state, self.from_halt = "HALT", True
            self._reset_protocol()
            return b"\xC2"
        return None

    def _command(self, apdu: bytes, granted: bool = False) -> bytes:
        """The answer to an APDU, or an S(WTX) first (`granted`: the reader has granted one)."""
        if self.wtx:
            self.waiting, self.answer_delay = apdu, self.wtx_after
            return self._wtx(self.wtx.popleft())
        if not granted and self.asks_for_time and self.busy > self.fwt:
            self.waiting = apdu
            return self._wtx(min(59, math.ceil(self.busy / self.fwt)))
        self.apdus.append(apdu)
        self.answer_delay = self.busy
        self.chain_out = self.app(apdu)
        return self._chained()

    def _wtx(self, multiplier: int) -> bytes:
        self.extensions += 1
        return self._send(bytes((0xF2, multiplier)))

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


def _full_cmac(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _mact(key: bytes, data: bytes) -> bytes:
    """The 8-byte MAC the card sends and checks: the odd bytes of the CMAC."""
    return _full_cmac(key, data)[1::2]


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

    def __init__(self, uid: bytes | str, answers: list[bytes] | None = None, **iso: object) -> None:
        self.recorded = deque(answers or [])
        super().__init__(uid, self._answer, **iso)

    def _answer(self, apdu: bytes) -> bytes:
        if apdu == NDEF_AID_SELECT:
            return b"\x90\x00"
        if self.recorded:
            return self.recorded.popleft()
        if apdu[1:2] == b"\x71":
            return os.urandom(16) + b"\x91\xAF"
        return os.urandom(32) + b"\x91\x00"
