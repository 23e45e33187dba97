"""The readers' pure parts: the tap debouncer, and the MFRC522 port's CRC and air times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.hardware.mfrc522chip import BIT_SECONDS, HLTA, air_time, crc_a
from agent.hardware.reader import TapDebouncer


def test_debouncer_a_held_card_is_one_tap_through_failed_reads() -> None:
    taps = TapDebouncer(rearm=0.5)
    assert taps.seen("04A1B2C3D4E5F6", 0.0)
    for now in (0.4, 0.8, 1.2, 1.6):  # something answered, but no read got through
        taps.present(now)
    assert not taps.seen("04A1B2C3D4E5F6", 2.0)


def test_debouncer_silence_longer_than_rearm_ends_a_presentation() -> None:
    taps = TapDebouncer(rearm=0.5)
    assert taps.seen("C1A2B3D4", 0.0)
    taps.present(0.6)  # too late: the card was gone; this answer does not bring it back
    assert not taps.holding(0.6)
    assert taps.seen("C1A2B3D4", 0.7)


def test_debouncer_a_different_card_taps_at_once() -> None:
    taps = TapDebouncer(rearm=0.5)
    assert taps.seen("C1A2B3D4", 0.0)
    taps.present(0.1)
    assert taps.seen("04A1B2C3D4E5F6", 0.2)
    assert not taps.holding(float("inf")) and not TapDebouncer(0.5).holding(0.0)


@given(gaps=st.lists(st.floats(0.0, 0.499), min_size=1, max_size=50),
       read=st.lists(st.booleans(), min_size=50, max_size=50))
def test_debouncer_answers_less_than_rearm_apart_are_one_tap(gaps: list[float], read: list[bool]) -> None:
    taps, now = TapDebouncer(rearm=0.5), 0.0
    count = int(taps.seen("04A1B2C3D4E5F6", now))
    for gap, ok in zip(gaps, read):
        now += gap
        if ok:
            count += taps.seen("04A1B2C3D4E5F6", now)
        else:
            taps.present(now)
    assert count == 1


def test_crc_a_matches_iso_14443_3_annex_b() -> None:
    assert crc_a(b"\x00\x00") == bytes([0xA0, 0x1E])
    assert crc_a(b"\x12\x34") == bytes([0x26, 0xCF])
    assert HLTA == b"\x50\x00" + crc_a(b"\x50\x00")


def test_air_time_counts_parity_start_and_end() -> None:
    assert air_time(7) == 9 * BIT_SECONDS  # a short frame: no parity bit
    assert air_time(16) == 20 * BIT_SECONDS
    assert round(air_time(8 * 9) * 1e6) == 783  # SELECT: 9 bytes, about 0.8 ms
