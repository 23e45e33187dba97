"""The MFRC522 reader backend, and the unmodified `mfrc522` driver under it, against an emulated chip.

Only what cannot run here is emulated: the chip on the SPI bus and RPi.GPIO
(agent/devtools/emulated_mfrc522.py). Time inside the chip is emulated too, so a
step-by-step test (`reader.step()`, no thread) is exact; the threaded tests
check the wiring with real time and wait on conditions.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.config import ReaderConfig
from agent.devtools.bench.card import reader_schedule
from agent.devtools.emulated_mfrc522 import (
    ISO_READY_AFTER,
    TRANSFER_SECONDS,
    Card,
    Doubles,
    EmulatedMFRC522,
    Fault,
    Noise,
    air_time,
    crc_a,
    from_bits,
    installed,
    to_bits,
)
from agent.devtools.emulated_ntag424 import (
    GarbageClone,
    IsoDepCard,
    KeylessClone,
    Ntag424,
    UidClone,
)
from agent.hardware.cardkeys import diversify
from agent.hardware.isodep import IsoDep, NoAnswer
from agent.hardware.mfrc522chip import BadFrame
from agent.hardware.securecard import SECURE_BUDGET
from tests.support.cards import MASTER, key_file
from tests.support.helpers import wait_for

UIDS = {4: "C1A2B3D4", 7: "04A1B2C3D4E5F6", 10: "04A1B2C3D4E5F6071829"}
DEFAULT_POLL = ReaderConfig(type="mfrc522").poll_interval


@dataclass
class Rig:
    chip: EmulatedMFRC522
    doubles: Doubles
    pins: MockFactory
    readers: list = field(default_factory=list)

    def reader(self, real_clock: bool = False, **config: object):
        """A reader on the emulated chip. The chip's timer always runs on emulated
        time; the debouncer does too unless `real_clock` (for threaded tests)."""
        from agent.hardware.mfrc522 import MFRC522Reader

        options = {"type": "mfrc522", "poll_interval": 0.1, **config}
        clock = time.monotonic if real_clock else self.chip.monotonic
        reader = MFRC522Reader(ReaderConfig(**options), self.pins, sleep=self.chip.sleep, clock=clock)
        self.readers.append(reader)
        return reader

    def run(self, reader, seconds: float) -> list[str]:
        """Polls for `seconds` of emulated time, as the reader's thread would; the taps."""
        taps, end = [], self.chip.now + seconds
        while self.chip.now < end:
            taps += self.poll(reader, 1)
        return taps

    def poll(self, reader, times: int) -> list[str]:
        """`times` polls, the emulated clock moving on as the reader asks; the taps."""
        taps = []
        for _ in range(times):
            badge, delay = reader.step()
            if badge is not None:
                taps.append(badge)
            self.chip.sleep(delay)
        return taps


@contextmanager
def emulated(**chip_options: object) -> Iterator[Rig]:
    chip = EmulatedMFRC522(**chip_options)
    pins = MockFactory()
    with installed({(0, 0): chip}) as doubles:
        rig = Rig(chip, doubles, pins)
        try:
            yield rig
        finally:
            for reader in rig.readers:
                reader.close()
            pins.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    with emulated() as rig:
        yield rig


def driver():
    """The driver, built by its own constructor (which uses the RPi.GPIO double)."""
    from mfrc522 import MFRC522

    return MFRC522()


# The emulated chip, checked through the driver's own calls.


def test_emulator_crc_coprocessor_matches_iso_14443_vectors(rig: Rig) -> None:
    chip = driver()
    # ISO/IEC 14443-3 Annex B examples, and HLTA's well-known 57 CD.
    for data, crc in (([0x00, 0x00], [0xA0, 0x1E]), ([0x12, 0x34], [0x26, 0xCF]), ([0x50, 0x00], [0x57, 0xCD])):
        # CalulateCRC leaves CalcCRC running, which would take the next bytes in: stop it first.
        chip.Write_MFRC522(chip.CommandReg, chip.PCD_IDLE)
        assert chip.CalulateCRC(data) == crc


def test_emulator_selected_card_answers_reqa_every_other_poll(rig: Rig) -> None:
    chip = driver()
    rig.chip.place(Card(UIDS[4]))
    seen = []
    for _ in range(6):
        status, _bits = chip.MFRC522_Request(chip.PICC_REQIDL)
        if status == chip.MI_OK:
            status, level = chip.MFRC522_Anticoll()
            assert status == chip.MI_OK and chip.MFRC522_SelectTag(level) == 0x08
        seen.append(status == chip.MI_OK)
    # A selected (ACTIVE) card takes the next REQA as an error and goes IDLE silently.
    assert seen == [True, False, True, False, True, False]


@settings(max_examples=30, deadline=None)
@given(prescaler=st.integers(0, 0xFFF), reload=st.integers(0, 0xFFFF))
def test_emulator_timer_fires_after_prescaler_times_reload(prescaler: int, reload: int) -> None:
    with emulated() as rig:
        chip = driver()
        chip.Write_MFRC522(chip.TModeReg, 0x80 | prescaler >> 8)
        chip.Write_MFRC522(chip.TPrescalerReg, prescaler & 0xFF)
        chip.Write_MFRC522(chip.TReloadRegH, reload >> 8)
        chip.Write_MFRC522(chip.TReloadRegL, reload & 0xFF)
        period = (2 * prescaler + 1) * (reload + 1) / 13.56e6  # datasheet 8.5
        chip.Write_MFRC522(chip.BitFramingReg, 0x07)
        chip.Write_MFRC522(chip.FIFODataReg, 0x26)
        chip.Write_MFRC522(chip.CommandReg, chip.PCD_TRANSCEIVE)
        chip.SetBitMask(chip.BitFramingReg, 0x80)  # sends REQA; the timer starts when sending ends
        deadline = rig.chip.now + air_time(7) + period
        if rig.chip.now + TRANSFER_SECONDS < deadline:  # a read that lands half a transfer early
            rig.chip.sleep(deadline - rig.chip.now - 1.5 * TRANSFER_SECONDS)
            assert not chip.Read_MFRC522(chip.CommIrqReg) & 0x01
        rig.chip.sleep(deadline - rig.chip.now)
        assert chip.Read_MFRC522(chip.CommIrqReg) & 0x01


# The driver's defects, which the backend works around.


def test_driver_request_on_empty_field_costs_about_2000_transfers(rig: Rig) -> None:
    chip = driver()
    before = rig.chip.transfers
    status, _bits = chip.MFRC522_Request(chip.PICC_REQIDL)
    transfers = rig.chip.transfers - before
    assert status == chip.MI_ERR
    assert 1990 <= transfers <= 2030
    assert rig.chip.timeouts == 1  # the timer did fire; the loop does not look
    assert transfers * TRANSFER_SECONDS * 10 > 0.5  # polled at 10 Hz: over half a core


def test_driver_anticollision_truncates_7_byte_uid(rig: Rig) -> None:
    chip = driver()
    rig.chip.place(Card(UIDS[7]))
    assert chip.MFRC522_Request(chip.PICC_REQIDL)[0] == chip.MI_OK
    status, level = chip.MFRC522_Anticoll()
    assert status == chip.MI_OK
    assert bytes(level[:4]).hex().upper() == "88" + UIDS[7][:6]


def test_driver_constructor_takes_over_process_gpio(rig: Rig) -> None:
    gpio = rig.doubles.gpio
    driver()
    # No mode set yet: it sets BOARD for the whole process, and gpiozero's
    # RPi.GPIO factory, which sets BCM, then fails.
    assert gpio.calls[0] == ("setmode", gpio.BOARD)
    with pytest.raises(ValueError):
        gpio.setmode(gpio.BCM)


def test_driver_constructor_in_bcm_mode_picks_bcm_15_for_reset(rig: Rig) -> None:
    gpio = rig.doubles.gpio
    gpio.setmode(gpio.BCM)
    driver()
    assert ("setup", 15, gpio.OUT) in gpio.calls  # physical pin 10 (UART RX), not RST's BCM 25


# The reader backend.


@pytest.mark.parametrize("size", [4, 7, 10])
def test_reader_reads_the_full_uid(rig: Rig, size: int) -> None:
    reader = rig.reader()
    rig.chip.place(Card(UIDS[size]))
    assert rig.poll(reader, 1) == [UIDS[size]]
    assert not UIDS[size].startswith("88")


@settings(max_examples=60, deadline=None)
@given(uid=st.sampled_from([4, 7, 10]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_reader_reads_any_uid(uid: bytes) -> None:
    with emulated() as rig:
        reader = rig.reader()
        rig.chip.place(Card(uid))
        assert rig.poll(reader, 1) == [uid.hex().upper()]


def test_reader_held_card_is_one_tap_and_seen_on_every_poll(rig: Rig) -> None:
    reader = rig.reader(rearm=0.5, poll_interval=0.1)
    card = rig.chip.place(Card(UIDS[7]))
    requests = rig.chip.requests
    taps = rig.poll(reader, 100)  # ten seconds on the reader
    assert taps == [UIDS[7]]
    # Halted after each read and woken by the next poll's WUPA: seen on every poll.
    assert rig.chip.requests - requests == card.answers == 100


def test_reader_taps_again_only_after_rearm_away(rig: Rig) -> None:
    reader = rig.reader(rearm=0.5, poll_interval=0.1)
    card = Card(UIDS[4])
    rig.chip.place(card)
    assert rig.poll(reader, 5) == [UIDS[4]]
    rig.chip.remove(card)
    rig.poll(reader, 2)  # lifted for about 0.2 s: the same presentation
    rig.chip.place(card)
    assert rig.poll(reader, 5) == []
    rig.chip.remove(card)
    rig.poll(reader, 6)  # away for more than rearm
    rig.chip.place(card)
    assert rig.poll(reader, 5) == [UIDS[4]]


def test_reader_taps_a_different_card_at_once(rig: Rig) -> None:
    reader = rig.reader(rearm=0.5)
    first = rig.chip.place(Card(UIDS[4]))
    assert rig.poll(reader, 2) == [UIDS[4]]
    rig.chip.remove(first)
    rig.chip.place(Card(UIDS[10]))
    assert rig.poll(reader, 2) == [UIDS[10]]


fault_lists = st.lists(
    st.builds(Fault, st.sampled_from(["clean", "drop", "flip", "parity", "collision"]), st.integers(0, 63)),
    max_size=12,
)


@settings(max_examples=80, deadline=None)
@given(size=st.sampled_from([4, 7, 10]), faults=fault_lists)
# The SAK's cascade bit flipped at CL1: unchecked, the UID would end as 88xxxxxx.
@example(size=7, faults=[Fault("clean"), Fault("clean"), Fault("flip", 2)])
def test_reader_rf_noise_never_gives_a_wrong_badge(size: int, faults: list[Fault]) -> None:
    with emulated() as rig:
        reader = rig.reader(rearm=0.5, poll_interval=0.05)
        rig.chip.place(Card(UIDS[size]))
        rig.chip.inject(*faults)
        taps = rig.poll(reader, 40)
        assert set(taps) == {UIDS[size]}
        assert not rig.chip.faults  # every fault hit an answer
        if len(faults) <= 3:  # at most 4 polls (0.25 s) without a good read: under rearm
            assert len(taps) == 1
        assert reader.healthy


@pytest.mark.parametrize("kind", ["drop", "flip", "parity"])
def test_reader_a_new_card_whose_first_read_is_garbled_is_read_at_the_next_look(rig: Rig, kind: str) -> None:
    """The card answered the WUPA, then its anticollision answer was lost or garbled: it is
    READY, and a WUPA alone would silence it for a whole look more (39.7 ms to the relay)."""
    reader = rig.reader()
    rig.chip.place(Card(UIDS[7]))
    rig.chip.inject(Fault("clean"), Fault(kind, 3))  # its ATQA answers; its UID does not arrive whole
    assert rig.poll(reader, 1) == [] and not rig.chip.faults
    assert rig.poll(reader, 1) == [UIDS[7]]


def test_reader_a_card_held_3_s_under_rf_noise_is_one_tap() -> None:
    # 15 % of the card's answers corrupted (a bit flipped, a parity error, or lost):
    # each of 30 presentations of 3 s is one tap, as the contract says, however
    # many of its reads fail. The reader's defaults: its poll interval and rearm.
    with emulated(noise=Noise(0.15, seed=20)) as rig:
        reader = rig.reader(poll_interval=DEFAULT_POLL)
        per_presentation = []
        for _ in range(30):
            card = rig.chip.place(Card(UIDS[7]))
            per_presentation.append(rig.run(reader, 3.0))
            rig.chip.remove(card)
            assert rig.run(reader, 1.0) == []
        assert per_presentation == [[UIDS[7]]] * 30
        assert reader.healthy


def test_reader_two_cards_at_once_give_no_tap_until_one_leaves(rig: Rig) -> None:
    reader = rig.reader()
    rig.chip.place(Card(UIDS[4]))
    other = rig.chip.place(Card(UIDS[7]))
    assert rig.poll(reader, 10) == []  # their answers collide (CollErr)
    rig.chip.remove(other)
    assert rig.poll(reader, 1) == [UIDS[4]]
    assert reader.healthy


def test_reader_empty_field_costs_under_1_percent_of_a_core(rig: Rig) -> None:
    # The cost model: 30 us of CPU per SPI transfer on a Pi.
    reader = rig.reader(poll_interval=DEFAULT_POLL)
    rig.poll(reader, 1)  # bring-up
    transfers, timeouts, start = rig.chip.transfers, rig.chip.timeouts, rig.chip.now
    rig.poll(reader, 600)
    looks = (rig.chip.transfers - transfers) / 600
    assert looks == 5  # Idle, WUPA into the FIFO, Transceive, StartSend, CommIrqReg
    assert (rig.chip.transfers - transfers) * TRANSFER_SECONDS / (rig.chip.now - start) < 0.01
    assert rig.chip.timeouts - timeouts >= 599  # the chip's timer ran at every look: it is alive


@pytest.mark.parametrize("size", [4, 7, 10])
def test_reader_reports_a_card_within_one_look_and_its_read(size: int) -> None:
    # Cards laid on the reader at 200 moments spread over the looks, each answering
    # only ISO 14443-3's 5 ms after entering the field: the reader's part of card to
    # relay is the wait for the next look, the look, and the read on the air.
    delays, cpu = reader_schedule(DEFAULT_POLL, 200, UIDS[size], seed=size)
    # A look: 5 transfers and the WUPA and ATQA's 0.4 ms on the air; the one that
    # finds nothing, the wait, the one that finds the card. Then the read: 2.2 /
    # 4.1 / 5.9 ms of anticollision and SELECT on the air, 15 transfers a level.
    look, read = 0.00055, {4: 0.003, 7: 0.0052, 10: 0.0075}[size]
    assert max(delays) < ISO_READY_AFTER + look + DEFAULT_POLL + look + read
    assert sorted(delays)[100] < ISO_READY_AFTER + look + DEFAULT_POLL / 2 + look + read
    assert cpu < 1.0


@pytest.mark.parametrize("floating", [0x00, 0xFF])
def test_reader_recovers_when_the_chip_vanishes(rig: Rig, floating: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.hardware.mfrc522")
    reader = rig.reader()
    assert rig.poll(reader, 1) == [] and reader.healthy
    rig.chip.unplug(floating)
    delays = [reader.step()[1] for _ in range(7)]
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert not reader.healthy and "/dev/spidev0.0" in reader.detail
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 2 and all("retrying" in w for w in warnings)  # once per reason, not per retry
    rig.chip.plug()  # back, with every register at its power-on value
    assert reader.step() == (None, 0.1)
    assert reader.healthy and reader.detail is None
    assert "answers (MFRC522 v2.0)" in caplog.records[-1].getMessage()
    rig.chip.place(Card(UIDS[7]))
    assert rig.poll(reader, 1) == [UIDS[7]]
    assert reader.step()[1] == 0.1  # and a later fault starts the backoff afresh
    rig.chip.unplug()
    assert reader.step()[1] == 0.2


def test_reader_recovers_from_spi_errors(rig: Rig) -> None:
    reader = rig.reader()
    rig.poll(reader, 1)
    rig.chip.spi_error = OSError(5, "Input/output error")
    rig.poll(reader, 3)
    assert not reader.healthy and "Input/output error" in reader.detail
    rig.chip.spi_error = None
    rig.chip.place(Card(UIDS[4]))
    assert rig.poll(reader, 1) == [UIDS[4]]
    assert reader.healthy
    assert rig.chip.open_handles == 1  # reopened, not leaked


def test_reader_recovers_from_a_chip_reset_behind_its_back(rig: Rig) -> None:
    reader = rig.reader()
    rig.poll(reader, 1)
    rig.chip.power_on_reset()  # a brown-out: timer and antenna back to off
    rig.chip.place(Card(UIDS[10]))
    assert reader.step()[0] is None
    assert not reader.healthy and "no interrupt" in reader.detail
    assert rig.poll(reader, 1) == [UIDS[10]]
    assert reader.healthy


def test_reader_reports_a_missing_spi_device(rig: Rig) -> None:
    reader = rig.reader(bus=1)
    assert reader.step() == (None, 0.2)
    assert not reader.healthy
    assert "/dev/spidev1.0" in reader.detail and "SPI enabled" in reader.detail


@pytest.mark.parametrize(
    ("version", "healthy", "hint"),
    [(0x91, True, None), (0x92, True, None), (0x88, True, None),
     (0x00, False, "check wiring"), (0x37, False, "not an MFRC522")],
)
def test_reader_checks_the_version_register(version: int, healthy: bool, hint: str | None) -> None:
    with emulated(version=version) as rig:
        reader = rig.reader()
        reader.step()
        assert reader.healthy is healthy
        if hint:
            assert f"0x{version:02X}" in reader.detail and hint in reader.detail


def test_reader_drives_reset_through_gpiozero_and_leaves_rpi_gpio_alone(rig: Rig) -> None:
    reader = rig.reader()
    rig.chip.place(Card(UIDS[4]))
    rig.poll(reader, 2)
    rig.chip.unplug()
    rig.poll(reader, 1)
    rig.chip.plug()
    rig.poll(reader, 1)
    reader.close()
    assert rig.doubles.gpio.calls == []  # no setmode, setup or cleanup
    # Held high, pulsed low by each bring-up (the first and the recovery).
    assert [s.state for s in rig.pins.pin(25).states] == [False, True, False, True, False, True]


def test_reader_close_switches_the_field_off_and_frees_spi(rig: Rig) -> None:
    reader = rig.reader()
    rig.poll(reader, 1)
    assert rig.chip.field_on and rig.chip.open_handles == 1
    reader.close()
    reader.close()
    assert not rig.chip.field_on and rig.chip.open_handles == 0


def test_reader_thread_taps_and_reports_health(rig: Rig) -> None:
    reader = rig.reader(real_clock=True, rearm=1.0, poll_interval=0.01)
    taps: list[str] = []
    health: list[tuple[bool, str | None]] = []
    reader.start(taps.append, lambda ok, detail: health.append((ok, detail)))
    card = rig.chip.place(Card(UIDS[7]))
    wait_for(lambda: taps, what="the first tap")
    assert health == [(True, None)]
    rig.chip.remove(card)
    removed = time.monotonic()
    wait_for(lambda: time.monotonic() - removed > 1.0, what="rearm to pass")
    rig.chip.place(card)
    wait_for(lambda: len(taps) == 2, what="the second tap")
    answers = card.answers
    wait_for(lambda: card.answers > answers + 20, what="the card to stay on the reader")
    assert taps == [UIDS[7], UIDS[7]]
    rig.chip.unplug()
    wait_for(lambda: not reader.healthy, what="the reader to be reported gone")
    rig.chip.plug()
    wait_for(lambda: reader.healthy, what="the reader to be reported back")
    oks = [ok for ok, _ in health]  # False may repeat, as the reason changes on retries
    assert oks[0] and oks[-1] and len(oks) >= 3 and not any(oks[1:-1])
    reader.close()
    assert not [t for t in threading.enumerate() if t.name == reader.name]


def test_reader_thread_survives_a_failing_tap_handler(rig: Rig) -> None:
    reader = rig.reader(real_clock=True, rearm=0.0, poll_interval=0.01)
    calls: list[str] = []

    def handler(badge: str) -> None:
        calls.append(badge)
        raise RuntimeError("a bug downstream")

    reader.start(handler)
    card = rig.chip.place(Card(UIDS[4]))
    wait_for(lambda: calls, what="a tap")
    rig.chip.remove(card)
    rig.chip.place(Card(UIDS[10]))
    wait_for(lambda: UIDS[10] in calls, what="a tap after the failure")
    assert reader.healthy


# The chip's transceive: the port an ISO 14443-4 layer builds on.


class EchoCard(Card):
    """Once selected, answers any frame whose CRC_A is right with its bytes reversed
    (and their CRC_A), `computing` seconds late: a stand-in for an ISO 14443-4 card."""

    def __init__(self, uid: str, computing: float = 0.0) -> None:
        super().__init__(uid)
        self.computing = computing

    def receive(self, bits: list[int]) -> list[int] | None:
        data = from_bits(bits)
        self.answer_delay = 0.0
        if self.state != "ACTIVE" or len(bits) % 8 or len(data) < 3 or crc_a(data[:-2]) != data[-2:] \
                or data[0] == 0x50:
            return super().receive(bits)
        self.answer_delay = self.computing
        return to_bits(data[-3::-1] + crc_a(data[-3::-1]))


def _selected(rig: Rig, card: Card):
    """The chip's port, with `card` selected (ACTIVE)."""
    reader = rig.reader()
    reader.step()
    rig.chip.place(card)
    assert reader.chip.wake()
    assert reader.chip.activate().uid == card.uid
    return reader.chip


def test_transceive_sends_and_checks_crc_in_the_chip_and_reads_the_whole_fifo(rig: Rig) -> None:
    chip = _selected(rig, EchoCard(UIDS[7]))
    frame = bytes(range(1, 62))  # 61 bytes and the CRC: 63 of the FIFO's 64 each way
    transfers, start = rig.chip.transfers, rig.chip.now
    assert chip.transceive(frame, 0.005, expect=61) == frame[::-1]  # the chip added, checked, dropped the CRC
    assert rig.chip.transfers - transfers <= 12  # one burst each way, no busy loop
    on_air = air_time(8 * 63) * 2  # 63 bytes each way; nothing is read before the answer is in
    assert on_air < rig.chip.now - start < on_air + 0.001


def test_transceive_reports_a_garbled_answer_and_goes_on(rig: Rig) -> None:
    chip = _selected(rig, EchoCard(UIDS[4]))
    rig.chip.inject(Fault("flip", 9))
    with pytest.raises(BadFrame, match="ErrorReg 0x04"):  # CRCErr
        chip.transceive(b"\x02\x90\x60", 0.005)
    assert chip.transceive(b"\x02\x90\x60", 0.005) == b"\x60\x90\x02"


@pytest.mark.parametrize(("delay", "timeout", "answered"), [(0.05, 0.1, True), (0.05, 0.02, False)])
def test_transceive_waits_for_a_slow_card_by_the_chips_timer(rig: Rig, delay: float, timeout: float,
                                                              answered: bool) -> None:
    chip = _selected(rig, EchoCard(UIDS[10], computing=delay))
    transfers, start = rig.chip.transfers, rig.chip.now
    if answered:
        assert chip.transceive(b"\x0a\x0b", timeout) == b"\x0b\x0a"
    else:
        with pytest.raises(NoAnswer):
            chip.transceive(b"\x0a\x0b", timeout)
    waited = rig.chip.now - start
    assert min(delay, timeout) < waited < min(delay, timeout) + 0.004
    assert rig.chip.transfers - transfers < 40  # it sleeps between looks, up to 2 ms apart


def test_transceive_times_out_after_long_timeouts_too(rig: Rig) -> None:
    chip = _selected(rig, Card(UIDS[4]))  # a card that never answers such a frame
    start = rig.chip.now
    with pytest.raises(NoAnswer):
        chip.transceive(b"\x0a\x0b", 3.0)  # past the 25 us ticks' 1.6 s: coarser ticks
    assert 3.0 < rig.chip.now - start < 3.01


def test_transceive_refuses_a_frame_the_fifo_cannot_hold(rig: Rig) -> None:
    chip = _selected(rig, Card(UIDS[4]))
    with pytest.raises(ValueError, match="64-byte FIFO"):
        chip.transceive(bytes(65), 0.01)


def test_isodep_over_the_chip_chains_both_ways_within_the_fifo(rig: Rig) -> None:
    """An APDU of 200 bytes and its answer of 202: each way in blocks that fit the 64-byte
    FIFO with their CRC_A (the card takes 128, the reader announces 64)."""
    card = IsoDepCard(UIDS[7], lambda apdu: apdu[::-1] + b"\x90\x00")
    chip = _selected(rig, card)
    link = IsoDep(chip, budget=1.0, clock=rig.chip.monotonic, sleep=rig.chip.sleep)
    link.activate()
    apdu = bytes(range(200))
    assert link.exchange(apdu) == apdu[::-1] + b"\x90\x00"
    assert card.apdus == [apdu]
    assert card.frames == 4 + 3  # its four I-blocks, and an R(ACK) for each of its first three


# Secure cards (issue 21) on the MFRC522: its NTAG 424 DNA check over this port.


def _genuine(uid: str = UIDS[7], **iso: object) -> Ntag424:
    return Ntag424(uid, {2: diversify(MASTER, bytes.fromhex(uid))}, **iso)


def _secure(rig: Rig, tmp_path, **config: object):
    return rig.reader(secure="ntag424", card_key_file=str(key_file(tmp_path)), **config)


@pytest.mark.parametrize(("card", "authentic"), [
    (_genuine, True),
    (lambda: UidClone(UIDS[7]), False),  # a copied UID: no ISO 14443-4 at all
    (lambda: GarbageClone(UIDS[7]), False),  # answers RATS and all after it with noise
    (lambda: KeylessClone(UIDS[7]), False),  # frames perfectly, holds no key
    (lambda: Ntag424(UIDS[7]), False),  # genuine, but not provisioned by this lab
    (lambda: Ntag424(UIDS[7], {2: diversify(bytes(16), bytes.fromhex(UIDS[7]))}), False),  # another lab's
], ids=["genuine", "uid clone", "garbage clone", "keyless clone", "unprovisioned", "another lab's"])
def test_secure_a_card_on_the_mfrc522_is_one_tap_with_its_check(rig: Rig, tmp_path, card, authentic: bool) -> None:
    reader = _secure(rig, tmp_path)
    assert reader.authenticates
    rig.chip.place(card())
    taps = rig.run(reader, 3.0)  # held for 3 s: one tap, one check
    assert [(tap.badge, tap.authentic) for tap in taps] == [(UIDS[7], authentic)]
    assert reader.healthy


@pytest.mark.parametrize("kind", ["flip", "parity", "drop"])
@pytest.mark.parametrize("answer", [7, 8, 9, 10, 11],
                         ids=["ISOSelectFile", "AuthenticateEV2First", "its second part", "GetCardUID",
                              "S(DESELECT)"])
def test_secure_rf_noise_in_a_check_is_recovered_within_the_tap(rig: Rig, tmp_path, kind: str, answer: int) -> None:
    """One of the card's answers garbled or lost (after its ATQA, the anticollision and
    SELECT answers and its ATS: six before): R(NAK), and the card sends it again."""
    reader = _secure(rig, tmp_path)
    reader.step()
    rig.chip.place(_genuine())
    rig.chip.inject(*[Fault("clean")] * (answer - 1), Fault(kind, 40))
    taps = rig.run(reader, 1.0)
    assert [tap.authentic for tap in taps] == [True] and not rig.chip.faults


def _first_tap(rig: Rig, reader) -> tuple[object, float]:
    """Polls until a tap; the tap and the emulated seconds the look that made it took."""
    while True:
        start = rig.chip.now
        tap, delay = reader.step()
        if tap is not None:
            return tap, rig.chip.now - start
        rig.chip.sleep(delay)


@pytest.mark.parametrize("card", [
    lambda chip: _genuine(wtx=(59,) * 10_000, wtx_after=0.03),  # S(WTX) for ever
    lambda chip: _genuine(busy=0.3, asks_for_time=False),  # slower than its frame waiting time
    lambda chip: _pulled(chip, _genuine(), 6),  # gone right after its ATS: silence
    lambda chip: _genuine(ats=bytes.fromhex("03284E")),  # SFGI 14: a 4.9 s guard time asked for
], ids=["wtx for ever", "too slow", "silent after RATS", "guard time of seconds"])
def test_secure_a_check_never_takes_the_reader_longer_than_its_budget(rig: Rig, tmp_path, card) -> None:
    reader = _secure(rig, tmp_path)
    reader.step()
    rig.chip.place(card(rig.chip))
    tap, took = _first_tap(rig, reader)
    assert not tap.authentic
    assert took <= SECURE_BUDGET + 0.02  # the read (7 ms) and the chip's last look (2 ms) beside the budget


def _pulled(chip: EmulatedMFRC522, card: Card, heard: int) -> Card:
    chip.pull_after(card, heard)
    return card


def test_secure_a_slow_check_is_not_time_away(rig: Rig, tmp_path) -> None:
    """A check longer than `rearm` (a card asking for time) must not make the next look's
    sighting of the same card a second tap."""
    reader = _secure(rig, tmp_path, rearm=0.2)
    card = rig.chip.place(_genuine(busy=0.08))  # four commands, each with an S(WTX): 0.33 s
    taps = rig.run(reader, 3.0)
    assert [tap.authentic for tap in taps] == [True]
    assert card.extensions == 4 and sum(1 for apdu in card.apdus if apdu[:2] == b"\x90\x71") == 1


def test_secure_a_reader_fault_mid_check_is_not_a_sighting(rig: Rig, tmp_path) -> None:
    """The SPI fails in the middle of a check: the reader reports it (unhealthy), comes
    back, and checks the card still on it at once, rather than count it as seen."""
    reader = _secure(rig, tmp_path)
    card = rig.chip.place(_genuine())
    application, failed = card.app, []

    def failing(apdu: bytes) -> bytes:
        if apdu[:2] == b"\x90\x71" and not failed:  # the first authentication
            failed.append(apdu)
            rig.chip.spi_error = OSError(5, "Input/output error")  # from the next transfer on
        return application(apdu)

    card.app = failing
    health: list[bool] = []
    reader._on_health = lambda ok, detail: health.append(ok)
    taps = rig.poll(reader, 1)  # bring-up, and the look that fails mid-check
    assert taps == [] and health == [True, False] and not reader.healthy
    rig.chip.spi_error = None  # back before `rearm` has passed
    taps = rig.run(reader, 2.0)
    assert [tap.authentic for tap in taps] == [True] and reader.healthy and failed


def test_secure_the_agents_tap_handler_gets_the_check(rig: Rig, tmp_path) -> None:
    reader = rig.reader(real_clock=True, secure="ntag424", card_key_file=str(key_file(tmp_path)),
                        poll_interval=0.01)
    taps: list[tuple] = []
    reader.start(lambda badge, check=None: taps.append((badge, check)))
    rig.chip.place(_genuine())
    wait_for(lambda: taps, what="the secure tap")
    assert taps[0][0] == UIDS[7] and taps[0][1].authentic


def test_secure_cards_are_provisioned_through_the_mfrc522_port(rig: Rig) -> None:
    from agent.hardware.mfrc522 import MFRC522CardPort
    from agent.hardware.provision import provision

    card = rig.chip.place(Ntag424(UIDS[7]))  # as it comes from the factory
    port = MFRC522CardPort(ReaderConfig(type="mfrc522"), rig.pins, sleep=rig.chip.sleep)
    try:
        uid, sak = port.select_card()
        done = provision(port, uid, sak, MASTER, 2, clock=rig.chip.monotonic, sleep=rig.chip.sleep)
    finally:
        port.close()
    assert done.uid == bytes.fromhex(UIDS[7]) and not done.already
    assert card.application.keys[2] == diversify(MASTER, bytes.fromhex(UIDS[7]))
    assert rig.chip.open_handles == 0 and not rig.chip.field_on


def test_secure_a_serial_reader_offers_no_card_port() -> None:
    from agent.hardware.factory import CardPortUnavailable, open_card_port

    with pytest.raises(CardPortUnavailable, match="mfrc522"):
        open_card_port(ReaderConfig(type="rdm6300", port="/dev/serial0"))


def test_factory_builds_the_mfrc522_reader(rig: Rig) -> None:
    from agent.hardware.factory import make_reader
    from agent.hardware.mfrc522 import MFRC522Reader

    with make_reader(ReaderConfig(type="mfrc522", reset_pin=24), simulate=False, pins=rig.pins) as reader:
        assert isinstance(reader, MFRC522Reader)
        assert rig.pins.pin(24).state  # RST held high: the chip runs


def test_agent_imports_without_the_driver() -> None:
    code = (
        "import sys, agent.hardware.factory, agent.hardware.mfrc522\n"
        "print(sorted(m for m in ('mfrc522', 'spidev', 'RPi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_reader_without_pi_packages_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['RPi'] = None\n"  # as on a machine without RPi.GPIO
        "from agent.config import ReaderConfig\n"
        "from agent.hardware.mfrc522 import MFRC522Reader\n"
        "try:\n    MFRC522Reader(ReaderConfig(type='mfrc522'))\n"
        "except ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'fabpass[pi]'" in out
