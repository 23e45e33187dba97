"""NTAG 424 DNA: AES-128 secure messaging and the four commands fabpass sends.

Over an APDU exchange (ISO-DEP, agent.hardware.isodep): ISOSelectFile of the
NDEF application, AuthenticateEV2First (a three-pass mutual authentication
that proves the card holds a key, and gives the session keys, the transaction
identifier TI and a command counter), GetCardUID with a Full-mode answer, and
ChangeKey. As the NT4H2421Gx datasheet (§9.1, §10) and NXP AN12196 specify
them; tests/unit/test_ntag424.py checks each against AN12196's own examples.
The AES and CMAC are the `cryptography` package's.

Nothing here trusts what a card says before its MAC or its proof of RndA
checks out: a clone that frames perfectly but lacks the key fails there.
"""

from __future__ import annotations

import hmac
import os
import zlib
from collections.abc import Callable

Exchange = Callable[[bytes], bytes]  # a command APDU -> the response APDU (data ‖ SW1 SW2)

NDEF_APPLICATION = bytes.fromhex("00A4040C07D276000085010100")  # ISOSelectFile by DF name D2760000850101
OK, MORE = b"\x91\x00", b"\x91\xAF"
ISO_OK = b"\x90\x00"
AUTHENTICATE_FIRST, ADDITIONAL_FRAME, GET_CARD_UID, CHANGE_KEY = 0x71, 0xAF, 0x51, 0xC4
_BLOCK = 16
_ZERO_IV = bytes(_BLOCK)
# The status words a card may give (NT4H2421Gx Tables 22 and 23).
MEANINGS = {
    "911C": "illegal command", "911E": "integrity error: a MAC, CRC or padding that does not check out",
    "9140": "no such key", "917E": "length error", "919D": "permission denied",
    "919E": "parameter error", "91AD": "authentication delay", "91AE": "authentication error",
    "91BE": "boundary error", "91CA": "command aborted", "91EE": "memory error",
    "6700": "wrong length", "6982": "security status not satisfied", "6985": "conditions of use not satisfied",
    "6A80": "incorrect parameters", "6A82": "application or file not found", "6D00": "instruction not supported",
    "6E00": "class not supported",
}


class CardError(Exception):
    """The card refused a command; `status` is its status word (e.g. 91AE)."""

    def __init__(self, what: str, status: bytes) -> None:
        self.status = status.hex().upper()
        meaning = MEANINGS.get(self.status, "unknown status")
        super().__init__(f"{what}: the card answered {self.status or 'nothing'} ({meaning})")


class NotGenuine(Exception):
    """An answer that proves nothing: the card does not hold the key, or the answer was forged."""


def _cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def _cmac(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _rotate(data: bytes) -> bytes:
    """One byte to the left: RndA' and RndB' of the authentication."""
    return data[1:] + data[:1]


def _split(answer: bytes, what: str, expected: bytes = OK) -> bytes:
    """The data of a response APDU whose status word is `expected`; CardError otherwise."""
    if len(answer) < 2 or answer[-2:] != expected:
        raise CardError(what, answer[-2:])
    return answer[:-2]


def _apdu(ins: int, data: bytes = b"") -> bytes:
    """A native command wrapped as an ISO 7816-4 APDU: 90 INS 00 00 [Lc data] 00."""
    return bytes((0x90, ins, 0, 0)) + (bytes((len(data),)) + data if data else b"") + b"\x00"


def session_keys(key: bytes, rnd_a: bytes, rnd_b: bytes) -> tuple[bytes, bytes]:
    """SesAuthENCKey and SesAuthMACKey: CMAC of SV1 and SV2 under the authenticated key
    (datasheet §9.1.7). SV = label ‖ 00 01 00 80 ‖ RndA[15..14] ‖ (RndA[13..8] ⊕
    RndB[15..10]) ‖ RndB[9..0] ‖ RndA[7..0], RndX[15] being the first byte sent."""
    mixed = bytes(a ^ b for a, b in zip(rnd_a[2:8], rnd_b[0:6]))
    tail = b"\x00\x01\x00\x80" + rnd_a[0:2] + mixed + rnd_b[6:16] + rnd_a[8:16]
    return _cmac(key, b"\xA5\x5A" + tail), _cmac(key, b"\x5A\xA5" + tail)


class SecureChannel:
    """An authenticated session: its keys, TI, the key number it proved, and the
    command counter (0 after AuthenticateEV2First, +1 per command and answer)."""

    def __init__(self, ti: bytes, enc_key: bytes, mac_key: bytes, counter: int = 0, key_no: int = 0) -> None:
        self.ti, self.enc_key, self.mac_key = ti, enc_key, mac_key
        self.counter, self.key_no = counter, key_no

    def _mac(self, data: bytes) -> bytes:
        """The 8-byte MACt: the CMAC's bytes 1, 3, …, 15 (AN12196 §5.3)."""
        return _cmac(self.mac_key, data)[1::2]

    def _iv(self, label: bytes, counter: int) -> bytes:
        block = label + self.ti + counter.to_bytes(2, "little") + bytes(8)
        return _cbc(self.enc_key, _ZERO_IV, block, encrypt=True)

    def command_mac(self, ins: int, header: bytes = b"", data: bytes = b"") -> bytes:
        return self._mac(bytes((ins,)) + self.counter.to_bytes(2, "little") + self.ti + header + data)

    def encrypt(self, plain: bytes) -> bytes:
        """Command data in Full mode: padded (80 00…, always) and encrypted under IVc."""
        padded = plain + b"\x80" + bytes(-(len(plain) + 1) % _BLOCK)
        return _cbc(self.enc_key, self._iv(b"\xA5\x5A", self.counter), padded, encrypt=True)

    def check_answer(self, answer: bytes, what: str = "answer") -> bytes:
        """The data of an answer (data ‖ MACt ‖ 91 00) whose MACt checks out; counts the command."""
        body = _split(answer, what)
        if len(body) < 8:
            raise NotGenuine(f"{what}: an answer of {len(body)} bytes has no room for its MAC (length)")
        data, mac = body[:-8], body[-8:]
        expected = self._mac(b"\x00" + (self.counter + 1).to_bytes(2, "little") + self.ti + data)
        if not hmac.compare_digest(mac, expected):
            raise NotGenuine(f"{what}: the answer's MAC does not check out")
        self.counter += 1
        return data

    def decrypt(self, data: bytes, what: str = "answer") -> bytes:
        """Answer data in Full mode, after check_answer: decrypted under IVr, padding removed."""
        if not data or len(data) % _BLOCK:
            raise NotGenuine(f"{what}: encrypted data of {len(data)} bytes (length)")
        plain = _cbc(self.enc_key, self._iv(b"\x5A\xA5", self.counter), data, encrypt=False)
        end = plain.rstrip(b"\x00")
        if not end.endswith(b"\x80"):
            raise NotGenuine(f"{what}: the decrypted answer is not padded")
        return end[:-1]


class Ntag424:
    """The commands fabpass sends to an NTAG 424 DNA through `exchange`.

    `random` gives the reader's challenge RndA (os.urandom; tests fix it to
    replay AN12196's examples).
    """

    def __init__(self, exchange: Exchange, random: Callable[[int], bytes] = os.urandom) -> None:
        self._exchange = exchange
        self._random = random

    def select_application(self) -> None:
        _split(self._exchange(NDEF_APPLICATION), "ISOSelectFile", ISO_OK)

    def authenticate(self, key_no: int, key: bytes) -> SecureChannel:
        """AuthenticateEV2First with key `key_no`: the card proves it holds `key` (and we that we do)."""
        what = f"AuthenticateEV2First with key {key_no}"
        part1 = _split(self._exchange(_apdu(AUTHENTICATE_FIRST, bytes((key_no, 0)))), what, MORE)
        if len(part1) != _BLOCK:
            raise NotGenuine(f"{what}: an encrypted RndB of {len(part1)} bytes, not 16 (length)")
        rnd_b = _cbc(key, _ZERO_IV, part1, encrypt=False)
        rnd_a = self._random(_BLOCK)
        proof = _cbc(key, _ZERO_IV, rnd_a + _rotate(rnd_b), encrypt=True)
        part2 = _split(self._exchange(_apdu(ADDITIONAL_FRAME, proof)), what)
        if len(part2) != 2 * _BLOCK:
            raise NotGenuine(f"{what}: a second answer of {len(part2)} bytes, not 32 (length)")
        plain = _cbc(key, _ZERO_IV, part2, encrypt=False)
        if not hmac.compare_digest(plain[4:20], _rotate(rnd_a)):
            raise NotGenuine(f"{what}: the card's answer does not hold our RndA: it lacks the key")
        enc_key, mac_key = session_keys(key, rnd_a, rnd_b)
        return SecureChannel(plain[:4], enc_key, mac_key, 0, key_no)

    def get_card_uid(self, channel: SecureChannel) -> bytes:
        """The card's UID, read in Full mode: encrypted, and MACed with the session key."""
        answer = self._exchange(_apdu(GET_CARD_UID, channel.command_mac(GET_CARD_UID)))
        return channel.decrypt(channel.check_answer(answer, "GetCardUID"), "GetCardUID")

    def change_key(self, channel: SecureChannel, key_no: int, new_key: bytes, old_key: bytes,
                   version: int = 0) -> None:
        """ChangeKey in Full mode. Another key than the one authenticated (case 1) is sent
        as (new ⊕ old) ‖ version ‖ CRC32(new), so the card checks we know the old one;
        the authenticated key itself (case 2) as new ‖ version, after which the session
        is over."""
        if key_no == channel.key_no:
            plain = new_key + bytes((version,))
        else:
            crc = (zlib.crc32(new_key) ^ 0xFFFFFFFF).to_bytes(4, "little")  # JAMCRC, as NXP's CRC32
            plain = bytes(a ^ b for a, b in zip(new_key, old_key)) + bytes((version,)) + crc
        header = bytes((key_no,))
        encrypted = channel.encrypt(plain)
        mac = channel.command_mac(CHANGE_KEY, header, encrypted)
        answer = self._exchange(_apdu(CHANGE_KEY, header + encrypted + mac))
        what = f"ChangeKey of key {key_no}"
        if key_no == channel.key_no:
            _split(answer, what)
            if len(answer) != 2:
                raise NotGenuine(f"{what}: an answer of {len(answer)} bytes to a change of the session's key")
            channel.counter += 1
        else:
            channel.check_answer(answer, what)
