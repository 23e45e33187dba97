"""Card keys: the lab's master key file and the AN10922 diversification of it per card.

The diversification is checked against NXP AN10922 §2.2.1 (AES-128), as the
vector is published in the open Rust library Amperstrand/ntag424
(ntag424-core/src/crypto/key_diversification.rs, test `an10922_aes128_vector`):
master key, CMAC subkeys and diversified key for UID 04782E21801D80, AID 3042F5
and system identifier "NXP Abu". The project's own check value (master
00112233…EEFF, UID 04A1B2C3D4E5F6 → 111AAC9F…A218) fixes fabpass's input
D = 01 ‖ UID ‖ "fabpass", which is exactly one block long and so differs from a
one-block CMAC.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from agent.hardware.cardkeys import (
    CardKeyError,
    an10922,
    cmac_subkeys,
    diversify,
    load_master_key,
    parse_key,
)

H = bytes.fromhex
MASTER = H("00112233445566778899AABBCCDDEEFF")


def test_cardkeys_cmac_subkeys_match_an10922_steps_2_to_4() -> None:
    k1, k2 = cmac_subkeys(MASTER)
    assert k1 == H("FBC9F75C9413C041DFEE452D3F0706D1")
    assert k2 == H("F793EEB928278083BFDC8A5A7E0E0D25")


def test_cardkeys_an10922_aes128_vector() -> None:
    m = H("04782E21801D80") + H("3042F5") + b"NXP Abu"
    assert m == H("04782E21801D803042F54E585020416275")
    assert an10922(MASTER, m) == H("A8DD63A3B89D54B37CA802473FDA9175")


def test_cardkeys_fabpass_check_value() -> None:
    assert diversify(MASTER, H("04A1B2C3D4E5F6")) == H("111AAC9FA22D85D2D5797FF39CD9A218")


def test_cardkeys_fabpass_input_is_not_a_one_block_cmac() -> None:
    """D = 01 ‖ UID(7) ‖ "fabpass" is 15 bytes: padded to 32 with K2, never one block with K1."""
    mac = cmac.CMAC(algorithms.AES(MASTER))
    mac.update(b"\x01" + H("04A1B2C3D4E5F6") + b"fabpass")
    assert diversify(MASTER, H("04A1B2C3D4E5F6")) != mac.finalize()


def test_cardkeys_a_full_32_byte_input_uses_k1_like_cmac() -> None:
    """AN10922 §2.2: D of exactly 32 bytes is not padded and takes K1, which is what CMAC does."""
    m = bytes(range(31))
    mac = cmac.CMAC(algorithms.AES(MASTER))
    mac.update(b"\x01" + m)
    assert an10922(MASTER, m) == mac.finalize()


def test_cardkeys_every_uid_and_master_gives_its_own_key() -> None:
    a, b = diversify(MASTER, H("04A1B2C3D4E5F6")), diversify(MASTER, H("04A1B2C3D4E5F7"))
    other = diversify(bytes(16), H("04A1B2C3D4E5F6"))
    assert len({a, b, other}) == 3


@pytest.mark.parametrize("m", [b"", bytes(32)])
def test_cardkeys_an10922_takes_1_to_31_bytes(m: bytes) -> None:
    with pytest.raises(ValueError):
        an10922(MASTER, m)


def test_cardkeys_parse_key_takes_32_hex_digits() -> None:
    assert parse_key(" 00112233445566778899aabbccddeeff\n", "--key0") == MASTER
    for bad in ("0011", "zz" * 16, "00" * 17, ""):
        with pytest.raises(CardKeyError, match="--key0: .*32 hex digits"):
            parse_key(bad, "--key0")


def _key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "card.key"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_cardkeys_load_master_key_reads_a_private_file(tmp_path: Path) -> None:
    assert load_master_key(_key_file(tmp_path, MASTER.hex().upper() + "\n")) == MASTER


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_cardkeys_a_key_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, MASTER.hex(), mode)
    with pytest.raises(CardKeyError, match=f"{path}: readable by others; chmod 600 {path}"):
        load_master_key(path)


def test_cardkeys_errors_name_the_file_and_never_show_the_key(tmp_path: Path) -> None:
    secret = "00112233445566778899AABBCCDDEEF"  # one digit short
    path = _key_file(tmp_path, secret)
    with pytest.raises(CardKeyError) as err:
        load_master_key(path)
    assert str(path) in str(err.value) and secret not in str(err.value)
    with pytest.raises(CardKeyError, match="cannot read"):
        load_master_key(tmp_path / "missing.key")
    assert "32 hex digits" in str(err.value)
