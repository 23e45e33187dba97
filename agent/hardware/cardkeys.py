"""The lab's card master key, and each card's own key diversified from it.

A secure card (NTAG 424 DNA) proves it holds its key `[reader] card_key_no`.
That key is not the master key itself but its AN10922 diversification with
the card's UID, so a key read out of one card (or set on it by mistake) opens
no other card; only the master key, in `[reader] card_key_file` on each
machine, derives them all (docs/cards.md has the threat model).

AN10922 §2.2 (AES-128): D = 01 ‖ M, padded with 80 00… to 32 bytes and the
last block XORed with the CMAC subkey K2 (K1 when D is a full 32 bytes); the
key is the last block of AES-CBC over D with a zero IV. fabpass's M is the
7-byte UID from anticollision followed by the ASCII bytes "fabpass", so D is
15 bytes: it is padded to two blocks, which a one-block CMAC would not do.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KEY_BYTES = 16
LABEL = b"fabpass"  # the system identifier in every card's diversification input
_BLOCK = 16
_RB = 0x87  # NIST SP 800-38B: the constant of subkey doubling for a 128-bit block


class CardKeyError(ValueError):
    """A key that cannot be used; the message names where it came from, never the key."""


def parse_key(text: str, what: str) -> bytes:
    """An AES-128 key from 32 hex digits (surrounding blanks ignored); `what` names
    the source (a file, an option) in the error."""
    digits = text.strip()
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES or len(digits) != 2 * KEY_BYTES:
        raise CardKeyError(f"{what}: an AES-128 key is 32 hex digits")
    return key


def load_master_key(path: str | Path) -> bytes:
    """The lab's master key from its file, which only its owner may read (mode 0600)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as err:
        raise CardKeyError(f"{path}: cannot read: {err.strerror or err}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CardKeyError(f"{path}: readable by others; chmod 600 {path}")
    return parse_key(text, str(path))


def _aes_ecb(key: bytes, block: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _double(block: bytes) -> bytes:
    """Multiplication by x in GF(2^128), as CMAC derives its subkeys."""
    value = int.from_bytes(block, "big") << 1
    if value >> 128:
        value = (value & ((1 << 128) - 1)) ^ _RB
    return value.to_bytes(_BLOCK, "big")


def cmac_subkeys(key: bytes) -> tuple[bytes, bytes]:
    """K1 and K2 of AES-CMAC under `key` (NIST SP 800-38B §6.1)."""
    k1 = _double(_aes_ecb(key, bytes(_BLOCK)))
    return k1, _double(k1)


def an10922(key: bytes, m: bytes) -> bytes:
    """The AES-128 diversification of `key` with the input M (1 to 31 bytes), AN10922 §2.2."""
    if not 1 <= len(m) <= 2 * _BLOCK - 1:
        raise ValueError(f"AN10922 takes a diversification input of 1 to 31 bytes, not {len(m)}")
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    d = b"\x01" + m
    k1, k2 = cmac_subkeys(key)
    if len(d) < 2 * _BLOCK:
        d, subkey = (d + b"\x80").ljust(2 * _BLOCK, b"\x00"), k2
    else:
        subkey = k1
    d = d[:_BLOCK] + bytes(a ^ b for a, b in zip(d[_BLOCK:], subkey))
    encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(_BLOCK))).encryptor()
    return (encryptor.update(d) + encryptor.finalize())[-_BLOCK:]


def diversify(master: bytes, uid: bytes) -> bytes:
    """The key of the card with this UID (as anticollision reads it)."""
    return an10922(master, uid + LABEL)
