"""The MFRC522 reader: 13.56 MHz ISO 14443 A cards (MIFARE Classic, Ultralight/NTAG, DESFire) over SPI.

How it looks for cards, and what each look costs (30 us of CPU per SPI
transfer on a Pi; the chip's side is `agent.hardware.mfrc522chip`):

- An empty field is probed every `poll_interval` (default 16 ms) with a WUPA
  and a short timer: five transfers, 150 us, so 0.9 % of a core.
- A card that answers is read at once (anticollision and SELECT through its
  cascade levels: 20 / 34 / 48 transfers in all and 2.2 / 4.1 / 5.9 ms on the
  air for a 4 / 7 / 10 byte UID), and the tap is reported before anything
  else: the card is halted at the next look, so that the WUPA after it wakes it.
- A card on the reader is read again every HELD_INTERVAL to tell whether it is
  still there (or was swapped). An answer that is garbled (RF noise, two cards)
  still says a card is there; a look that hears nothing is retried every
  `poll_interval`, and the card is gone only once nothing has answered for
  `rearm`. So a held card is one tap, however many of its reads fail.

The `mfrc522` package (0.0.7) is the driver that resets the chip and switches
its antenna; it is imported only when this reader is built, so the agent
imports without any Pi library. Its higher calls have defects this module
avoids: `MFRC522_ToCard` never stops on the timer interrupt (an empty poll
reads CommIrqReg about 2,000 times: 60 ms of CPU on a Pi) and copies at most
16 bytes from the FIFO; `MFRC522_Anticoll` reads only cascade level 1, so a
7-byte UID comes back as `88 xx xx xx`; `SimpleMFRC522`'s number folds in the
check byte; the constructor and `Close_MFRC522` touch RPi.GPIO for the whole
process (see `_driver`).

Wiring and setup: docs/reader-mfrc522.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero import DigitalOutputDevice, Factory

from agent.config import ReaderConfig
from agent.core.model import badge_from_bytes
from agent.hardware.mfrc522chip import BadFrame, MFRC522Chip, ReaderFault
from agent.hardware.reader import TapDebouncer, ThreadedReader

if TYPE_CHECKING:
    from agent.hardware.securecard import CardCheck, CardVerifier

log = logging.getLogger(__name__)

SPI_HZ = 1_000_000  # the driver's default; the chip takes 10 MHz, jumper wires often do not
RESET_WAIT = 0.05  # oscillator start-up after a hard or soft reset
HELD_INTERVAL = 0.1  # how often a card left on the reader is read again


def _tight_timer_slack() -> None:
    """Ask the kernel to end this thread's sleeps within 1 us of their time instead
    of the default 50 us: a read sleeps through six waits on the air, so a card is
    reported about 0.3 ms sooner, for no CPU (prctl PR_SET_TIMERSLACK, Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _driver() -> Any:
    """An `mfrc522.MFRC522` whose constructor has not run.

    The constructor would call GPIO.setmode(BOARD) when no mode is set (a
    later gpiozero RPi.GPIO factory then fails on its setmode(BCM)), choose
    BCM 15 as RST in BCM mode (physical pin 10, the UART's RX), and claim
    that pin through RPi.GPIO beside gpiozero, which drives the relay. So the
    SPI device is opened here (`_open_spi`) and RST is a gpiozero output from
    the same pin factory as the relay.
    """
    try:
        from mfrc522 import MFRC522  # imports RPi.GPIO and spidev
    except ImportError as err:
        raise ImportError(
            f"the mfrc522 reader needs the Raspberry Pi packages: pip install 'fabpass[pi]' ({err})"
        ) from err
    return MFRC522.__new__(MFRC522)


class MFRC522Reader(ThreadedReader):
    """Reports the cards laid on an MFRC522; a held card is one tap. With `secure`,
    each new card first goes through the NTAG 424 DNA check (agent.hardware.securecard)
    over the chip's transceive, and its tap carries the CardCheck.

    `sleep` and `clock` are the seams for an emulated chip in tests: `sleep`
    waits for the chip, `clock` (monotonic seconds) feeds the debouncer.
    `chip` is the chip's port once it has been brought up (None before).
    """

    name = "mfrc522"

    def __init__(
        self,
        config: ReaderConfig,
        pins: Factory | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.config = config
        self.device = f"/dev/spidev{config.bus}.{config.device}"
        self.healthy, self.detail = False, f"{self.device} not opened yet"
        self._driver = _driver()
        import spidev

        self._spidev = spidev
        self._spi: Any = None
        self._reset = DigitalOutputDevice(config.reset_pin, initial_value=True, pin_factory=pins)
        self._sleep, self._clock = sleep, clock
        self._debouncer = TapDebouncer(config.rearm)
        self.chip: MFRC522Chip | None = None
        self._selected = False  # the card read last is ACTIVE: halt it before the next WUPA
        self._verifier: CardVerifier | None = None
        if config.secure is not None:  # every new card proves itself over ISO 14443-4 first
            from agent.hardware.cardkeys import load_master_key
            from agent.hardware.securecard import CardVerifier

            self._verifier = CardVerifier(load_master_key(config.card_key_file), config.card_key_no,
                                          clock=clock, sleep=sleep)
            self.authenticates = True

    # The loop and its health.

    def _run(self) -> None:
        _tight_timer_slack()
        while not self._stop.is_set():
            started = time.monotonic()
            tap, delay = self.step()
            if isinstance(tap, str):
                self._tap(tap)
            elif tap is not None:
                self._tap(tap.badge, tap)
            self._stop.wait(max(0.0, delay - (time.monotonic() - started)))  # from look to look

    def step(self) -> tuple[str | CardCheck | None, float]:
        """One look: (a new tap or None, seconds to wait before the next look). A tap
        is the badge, or with `secure` the card's CardCheck (its badge, authentic or not).

        Brings the chip up first when it is new or has stopped answering; a
        chip that does not answer is reported unhealthy and retried with backoff.
        """
        try:
            if self.chip is None:
                self._bring_up()
            return self._look(self.chip)
        except (ReaderFault, OSError) as err:
            return None, self._lost(str(err))
        except Exception as err:  # a surprise from the driver must not end the thread
            log.exception("%s: unexpected error", self.name)
            return None, self._lost(repr(err))

    def _look(self, chip: MFRC522Chip) -> tuple[str | CardCheck | None, float]:
        now = self._clock()
        if self._selected or self._debouncer.holding(now):
            # A card that answered the last look is ACTIVE, or READY when its read failed
            # (a held card too, whose answer to the WUPA was lost): either takes a WUPA as
            # an error and falls silent. HLTA first, so that the WUPA wakes it.
            chip.halt()
            self._selected = False
        if not chip.wake():
            return None, self.config.poll_interval
        self._selected = True
        self._debouncer.present(now)  # something answered: a held card is still there
        try:
            card = chip.activate()
        except BadFrame as err:
            log.debug("%s: garbled read, trying again: %s", self.name, err)
            return None, self.config.poll_interval
        badge = badge_from_bytes(card.uid)
        held = max(HELD_INTERVAL, self.config.poll_interval)
        if not self._debouncer.seen(badge, now):
            return None, held
        if self._verifier is None:
            return badge, held
        try:
            check = self._verifier.check(chip, card.uid, card.sak)  # at most SECURE_BUDGET
        except BaseException:
            self._debouncer.forget()  # a reader fault is no sighting: the card is checked at the next look
            raise
        self._debouncer.seen(badge, self._clock())  # the check's own time is not time away
        return check, held

    def _lost(self, why: str) -> float:
        self.chip = None
        self._selected = False
        return super()._lost(f"{self.device}: {why}")

    def _bring_up(self) -> None:
        self._open_spi()
        driver = self._driver
        self._reset.off()  # a hard reset: RST low for more than 100 ns
        self._reset.on()
        driver.MFRC522_Reset()  # and a soft one, for boards whose RST is tied high
        self._sleep(RESET_WAIT)
        chip = MFRC522Chip(self._spi, self._sleep)
        version = chip.setup()
        driver.AntennaOn()
        self.chip = chip
        if not self.healthy:
            log.info("%s: %s answers (%s)", self.name, self.device, version)
        self._answering()

    def _open_spi(self) -> None:
        self._close_spi()
        spi = self._spidev.SpiDev()
        try:
            spi.open(self.config.bus, self.config.device)
        except OSError as err:
            raise ReaderFault(f"cannot open: {err.strerror or err} (is SPI enabled? see docs/reader-mfrc522.md)") from err
        spi.max_speed_hz = SPI_HZ
        self._spi = self._driver.spi = spi

    def _close_spi(self) -> None:
        if self._spi is not None:
            self._spi.close()
            self._spi = None

    def _release(self) -> None:
        if self.chip is not None:
            with contextlib.suppress(OSError):
                self._driver.AntennaOff()  # no RF field while no agent listens
        self.chip = None
        self._close_spi()
        self._reset.close()


class MFRC522CardPort:
    """The MFRC522 as a card port (agent.hardware.securecard.CardPort), the agent stopped:
    what `fabpass cards provision` selects a card with and carries its frames through."""

    def __init__(self, config: ReaderConfig, pins: Factory | None = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._reader = MFRC522Reader(dataclasses.replace(config, secure=None), pins, sleep=sleep)
        try:
            self._reader._bring_up()
        except BaseException:
            self._reader.close()
            raise
        assert self._reader.chip is not None
        self._chip = self._reader.chip

    def select_card(self) -> tuple[bytes, int] | None:
        return self._chip.select_card()

    def transceive(self, frame: bytes, timeout: float) -> bytes:
        return self._chip.transceive(frame, timeout)

    def close(self) -> None:
        self._reader.close()
