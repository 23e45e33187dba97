"""agent.core.model: badge normalisation and the Member helpers."""

from __future__ import annotations

import pytest

from agent.core.model import (
    BadBadge,
    Member,
    badge_from_bytes,
    em_bits,
    is_normal_list_badge,
    normalise_badge,
    normalise_list_badge,
    printed_numbers,
)


@pytest.mark.parametrize(
    "text, badge",
    [
        ("04A1B2C3", "04A1B2C3"),                          # 4-byte MIFARE Classic
        ("04a1b2c3", "04A1B2C3"),
        ("04:a1:b2:c3", "04A1B2C3"),
        ("04 A1 B2 C3", "04A1B2C3"),
        ("04-A1-B2-C3", "04A1B2C3"),
        ("  04A1B2C3\n", "04A1B2C3"),
        ("04\tA1 B2:C3", "04A1B2C3"),
        ("0102030405", "0102030405"),                      # 5-byte EM4100
        ("04A1B2C3D4E5F6", "04A1B2C3D4E5F6"),              # 7-byte NTAG
        ("04:a1:b2:c3:d4:e5:f6", "04A1B2C3D4E5F6"),
        ("0102030405060708090A", "0102030405060708090A"),  # 10-byte DESFire
        ("deadbeef", "DEADBEEF"),
    ],
)
def test_model_normalise_badge(text, badge):
    assert normalise_badge(text) == badge
    assert normalise_badge(badge) == badge  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "04A1B2", "04A1B2C3D", "04A1B2C3D4E5", "04A1B2C3D4E5F607",
        "0102030405060708090A0B", "04A1B2CG", "04A1B2C3!", "0x04A1B2C3", "04.A1.B2.C3", "04_A1_B2_C3",
        "ÄÖ A1 B2 C3", "０４Ａ１Ｂ２Ｃ３", 0x04A1B2C3, None, b"04A1B2C3", ["04A1B2C3"],
    ],
)
def test_model_normalise_badge_rejects(text):
    with pytest.raises(BadBadge):
        normalise_badge(text)


def test_model_bad_badge_is_a_value_error_and_names_the_input():
    with pytest.raises(ValueError, match="04A1B2"):
        normalise_badge("04A1B2")


@pytest.mark.parametrize(
    "uid, badge",
    [
        (b"\x04\xa1\xb2\xc3", "04A1B2C3"),
        (bytes(range(1, 6)), "0102030405"),
        (bytes.fromhex("04a1b2c3d4e5f6"), "04A1B2C3D4E5F6"),
        (bytes(10), "00" * 10),
    ],
)
def test_model_badge_from_bytes(uid, badge):
    assert badge_from_bytes(uid) == badge


@pytest.mark.parametrize("uid", [b"", b"\x01\x02\x03", bytes(6), bytes(8), bytes(11)])
def test_model_badge_from_bytes_rejects_other_lengths(uid):
    with pytest.raises(BadBadge):
        badge_from_bytes(uid)


@pytest.mark.parametrize("roles, staff", [(frozenset(), False), (frozenset({"staff"}), True),
                                          (frozenset({"host", "staff"}), True), (frozenset({"Staff"}), False)])
def test_model_member_is_staff(roles, staff):
    assert Member(id="m", name="n", status="active", roles=roles).is_staff is staff


def test_model_member_is_immutable_and_its_default_inductions_cannot_leak():
    a, b = Member(id="a", name="a", status="active"), Member(id="b", name="b", status="active")
    with pytest.raises(AttributeError):
        a.status = "suspended"
    with pytest.raises(TypeError):
        a.inductions["laser"] = None
    assert (a.status, a.inductions, b.inductions) == ("active", {}, {})


# --- EM4100 printed numbers ---------------------------------------------------------------------

def test_model_a_5_byte_read_matches_its_printed_numbers_whatever_its_first_byte():
    # 0004567890 is printed on the card whose low 32 bits are 0x0045B352: facility 0x45, card 0xB352
    assert printed_numbers("0A0045B352") == ("em:0004567890", "em:069,45906")
    assert printed_numbers("FF0045B352") == printed_numbers("0A0045B352")
    assert printed_numbers("0AFF45B352") == ("em:4282757970", "em:069,45906")  # bits 24-31 are in DEZ10 only
    assert printed_numbers("04A1B2C3D4E5F6") == () and printed_numbers("04A1B2C3") == ()


@pytest.mark.parametrize("text, badge", [
    ("em:0004567890", "em:0004567890"), ("EM:4567890", "em:0004567890"), ("em:0", "em:0000000000"),
    ("em:4294967295", "em:4294967295"), (" em:69,45906 ", "em:069,45906"), ("em:255,65535", "em:255,65535"),
    ("hex:0004567890", "0004567890"), ("HEX:04:a1:b2:c3", "04A1B2C3"),
])
def test_model_normalise_list_badge_em_and_hex(text, badge):
    assert normalise_list_badge(text) == badge
    assert normalise_list_badge(badge) == badge and is_normal_list_badge(badge)


@pytest.mark.parametrize("text", ["em:4294967296", "em:256,0", "em:1,65536", "em:", "em:1,2,3", "em:-1",
                                  "em:١٢٣", "em:00045678901", "hex:em:0004567890", "hex:", "em:0x45"])
def test_model_normalise_list_badge_rejects_bad_em_and_hex(text):
    with pytest.raises(BadBadge):
        normalise_list_badge(text)


@pytest.mark.parametrize("text", ["em:4294967296", "em:256,00000", "em:001,65536", "em:0004567890 ", "EM:0004567890"])
def test_model_only_in_range_lowercase_em_badges_are_normal(text):
    assert not is_normal_list_badge(text)


def test_model_em_bits():
    assert em_bits("em:0004567890") == (0x45B352, 32)
    assert em_bits("em:069,45906") == (0x45B352, 24)
    assert em_bits("0A0045B352") is None
