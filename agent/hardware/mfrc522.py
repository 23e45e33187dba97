"""The MFRC522 reader: 13.56 MHz ISO 14443 A cards (MIFARE Classic, Ultralight/NTAG, DESFire) over SPI.

The `mfrc522` package (0.0.7) is the register-level driver; it is imported only
when this reader is built, so the agent imports without any Pi library. Only
its register primitives are used (`Write_MFRC522`, `Read_MFRC522`,
`MFRC522_Reset`, `AntennaOn`/`AntennaOff`), because its higher calls have
defects this module works around:

- `MFRC522_ToCard` never stops on the timer interrupt, so an empty poll reads
  CommIrqReg about 2,000 times (60 ms of CPU on a Pi). Here a transceive uses
  the chip's timer, sleeps between reads and ends on TimerIRq or ErrIRq.
- `MFRC522_Anticoll` reads only cascade level 1, so a 7-byte UID comes back
  as `88 xx xx xx`. Here the full ISO 14443-3 cascade runs (CL1-CL3).
- `SimpleMFRC522`'s number folds in the check byte; the badge here is the UID.
- The constructor and `Close_MFRC522` touch RPi.GPIO for the whole process
  (see `_driver`); neither is used.

Wiring and setup: docs/reader-mfrc522.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalOutputDevice, Factory

from agent.config import ReaderConfig
from agent.core.model import badge_from_bytes
from agent.hardware.reader import TapDebouncer, ThreadedReader

log = logging.getLogger(__name__)

SPI_HZ = 1_000_000  # the driver's default; the chip takes 10 MHz, jumper wires often do not

# Register bits (NXP MFRC522 datasheet, section 9.3).
FLUSH_BUFFER = 0x80  # FIFOLevelReg
START_SEND = 0x80  # BitFramingReg
TX_CRC_EN = 0x80  # TxModeReg: the chip appends CRC_A to what it sends
CLEAR_ALL_IRQ = 0x7F  # CommIrqReg with Set1 = 0: clears every flag written as 1
RX_IRQ, ERR_IRQ, TIMER_IRQ = 0x20, 0x02, 0x01  # CommIrqReg
CRC_IRQ = 0x04  # DivIrqReg
SET_BIT = 0x80  # Set1/Set2 are write-only: a chip never reads them as 1
FRAME_ERRORS = 0x1B  # ErrorReg: BufferOvfl, CollErr, ParityErr, ProtocolErr
KNOWN_VERSIONS = {0x91: "MFRC522 v1.0", 0x92: "MFRC522 v2.0", 0x88: "FM17522 clone", 0x12: "counterfeit MFRC522"}

# The timer, started by the end of each transmission (TAuto): 25 us ticks
# (13.56 MHz / (2 * 169 + 1)), 80 of them, so 2 ms. A card answers an
# activation command within about 0.1 ms (ISO 14443-3 frame delay time).
TIMER_SETUP = (("TModeReg", 0x80), ("TPrescalerReg", 169), ("TReloadRegH", 0), ("TReloadRegL", 79))
WAIT_STEP = 0.001  # sleep between two reads of an interrupt register
WAIT_READS = 20  # 20 ms without the timer firing: the chip is not running
RESET_WAIT = 0.05  # oscillator start-up after a hard or soft reset

# ISO 14443-3 type A commands.
WUPA = 0x52  # wakes IDLE and HALT cards (REQA would miss a card halted by the previous poll)
HLTA = bytes([0x50, 0x00])
SELECT = (0x93, 0x95, 0x97)  # cascade levels 1-3
NVB_ANTICOLLISION = 0x20  # no UID bits known: every card sends its whole level
NVB_SELECT = 0x70  # all 40 bits of the level follow
CASCADE_TAG = 0x88
SAK_CASCADE = 0x04  # SAK bit: the UID continues at the next cascade level


class ReaderFault(Exception):
    """The chip does not answer as an MFRC522 should: unplugged, unpowered, miswired."""


class BadFrame(Exception):
    """A card answered, but garbled (RF noise, two cards at once): try again next poll."""


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
    """Polls an MFRC522 every `config.poll_interval` for a card; a held card is one tap.

    `sleep` and `clock` are the seams for an emulated chip in tests: `sleep`
    waits for the chip's timer, `clock` (monotonic seconds) feeds the debouncer.
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
        self._chip = _driver()
        import spidev

        self._spidev = spidev
        self._spi: Any = None
        self._reset = DigitalOutputDevice(config.reset_pin, initial_value=True, pin_factory=pins)
        self._sleep, self._clock = sleep, clock
        self._debouncer = TapDebouncer(config.rearm)
        self._ready = False

    # The loop and its health.

    def _run(self) -> None:
        while not self._stop.is_set():
            badge, delay = self.step()
            if badge is not None:
                self._tap(badge)
            self._stop.wait(delay)

    def step(self) -> tuple[str | None, float]:
        """One poll: (a new tap's badge or None, seconds to wait before the next poll).

        Brings the chip up first when it is new or has stopped answering; a
        chip that does not answer is reported unhealthy and retried with backoff.
        """
        try:
            if not self._ready:
                self._bring_up()
            uid = self._scan()
        except (ReaderFault, OSError) as err:
            return None, self._lost(str(err))
        except Exception as err:  # a surprise from the driver must not end the thread
            log.exception("%s: unexpected error", self.name)
            return None, self._lost(repr(err))
        if uid is None:
            return None, self.config.poll_interval
        badge = badge_from_bytes(uid)
        return (badge if self._debouncer.seen(badge, self._clock()) else None), self.config.poll_interval

    def _lost(self, why: str) -> float:
        self._ready = False
        return super()._lost(f"{self.device}: {why}")

    def _bring_up(self) -> None:
        self._open_spi()
        chip = self._chip
        self._reset.off()  # a hard reset: RST low for more than 100 ns
        self._reset.on()
        chip.MFRC522_Reset()  # and a soft one, for boards whose RST is tied high
        self._sleep(RESET_WAIT)
        version = chip.Read_MFRC522(chip.VersionReg)
        if version not in KNOWN_VERSIONS:
            hint = "no answer: check wiring, power and that SPI is enabled" if version in (0x00, 0xFF) else "not an MFRC522"
            raise ReaderFault(f"VersionReg reads 0x{version:02X}, expected 0x91 or 0x92 ({hint})")
        for register, value in TIMER_SETUP:
            chip.Write_MFRC522(getattr(chip, register), value)
        chip.Write_MFRC522(chip.TxAutoReg, 0x40)  # TxASKReg: 100 % ASK, as type A needs
        chip.Write_MFRC522(chip.ModeReg, 0x3D)  # CRC preset 0x6363, CRC_A's
        chip.AntennaOn()
        self._ready = True
        if not self.healthy:
            log.info("%s: %s answers (%s)", self.name, self.device, KNOWN_VERSIONS[version])
        self._answering()

    def _open_spi(self) -> None:
        self._close_spi()
        spi = self._spidev.SpiDev()
        try:
            spi.open(self.config.bus, self.config.device)
        except OSError as err:
            raise ReaderFault(f"cannot open: {err.strerror or err} (is SPI enabled? see docs/reader-mfrc522.md)") from err
        spi.max_speed_hz = SPI_HZ
        self._spi = self._chip.spi = spi

    def _close_spi(self) -> None:
        if self._spi is not None:
            self._spi.close()
            self._spi = None

    def _release(self) -> None:
        if self._ready:
            with contextlib.suppress(OSError):
                self._chip.AntennaOff()  # no RF field while no agent listens
        self._ready = False
        self._close_spi()
        self._reset.close()

    # ISO 14443-3: find a card and read its whole UID.

    def _scan(self) -> bytes | None:
        """The UID of the card in the field, or None: no card, or a garbled read."""
        try:
            answered = self._transceive(bytes([WUPA]), last_bits=7) is not None
        except BadFrame:
            answered = True  # an ATQA garbled by noise or by two cards: a card is there
        if not answered:
            return None
        try:
            return self._read_uid()
        except BadFrame as err:
            log.debug("%s: garbled read, trying again: %s", self.name, err)
            return None
        finally:
            # ACTIVE (or READY) -> HALT (or IDLE): the next poll's WUPA finds the card
            # again, so a held card is seen on every poll, not every other one.
            with contextlib.suppress(BadFrame):
                self._transceive(HLTA, crc=True)

    def _read_uid(self) -> bytes:
        uid = b""
        for select in SELECT:
            level = self._exchange(bytes([select, NVB_ANTICOLLISION]), 5, "anticollision")
            if level[0] ^ level[1] ^ level[2] ^ level[3] != level[4]:
                raise BadFrame(f"BCC mismatch in {level.hex()}")
            sak = self._exchange(bytes([select, NVB_SELECT]) + level, 3, "SELECT", crc=True)
            if self._crc_a(sak[:1]) != sak[1:]:
                raise BadFrame(f"CRC mismatch in SAK {sak.hex()}")
            if not sak[0] & SAK_CASCADE:
                return uid + level[:4]
            if level[0] != CASCADE_TAG:
                raise BadFrame(f"SAK says the UID goes on, but {level.hex()} has no cascade tag")
            uid += level[1:4]
        raise BadFrame("UID longer than three cascade levels")

    def _exchange(self, frame: bytes, length: int, what: str, crc: bool = False) -> bytes:
        answer = self._transceive(frame, crc=crc)
        if answer is None:
            raise BadFrame(f"no answer to {what}")
        if len(answer) != length:
            raise BadFrame(f"{what} answer of {len(answer)} bytes, expected {length}")
        return answer

    # The chip: transceive and CRC on the driver's register primitives.

    def _transceive(self, frame: bytes, last_bits: int = 0, crc: bool = False) -> bytes | None:
        """Send `frame` (its last byte holding `last_bits` bits, 0 for all 8); the
        card's answer, or None when the timer ran out with no answer."""
        chip = self._chip
        chip.Write_MFRC522(chip.CommandReg, chip.PCD_IDLE)  # ends the previous transceive
        chip.Write_MFRC522(chip.CommIrqReg, CLEAR_ALL_IRQ)
        chip.Write_MFRC522(chip.FIFOLevelReg, FLUSH_BUFFER)
        self._write_fifo(frame)
        chip.Write_MFRC522(chip.TxModeReg, TX_CRC_EN if crc else 0)
        chip.Write_MFRC522(chip.CommandReg, chip.PCD_TRANSCEIVE)
        chip.Write_MFRC522(chip.BitFramingReg, START_SEND | last_bits)
        irq = self._wait(chip.CommIrqReg, RX_IRQ | ERR_IRQ | TIMER_IRQ, "transceive")
        if irq & ERR_IRQ:
            error = chip.Read_MFRC522(chip.ErrorReg)
            if error & FRAME_ERRORS:
                raise BadFrame(f"ErrorReg 0x{error:02X}")
        if not irq & RX_IRQ:
            return None
        count = chip.Read_MFRC522(chip.FIFOLevelReg) & 0x7F
        if chip.Read_MFRC522(chip.ControlReg) & 0x07:
            raise BadFrame("an answer that does not end on a byte boundary")
        return self._read_fifo(count)

    def _crc_a(self, data: bytes) -> bytes:
        """CRC_A of `data` from the chip's coprocessor, low byte first (as sent)."""
        chip = self._chip
        chip.Write_MFRC522(chip.CommandReg, chip.PCD_IDLE)
        chip.Write_MFRC522(chip.DivIrqReg, CRC_IRQ)  # Set2 = 0: clears CRCIRq
        chip.Write_MFRC522(chip.FIFOLevelReg, FLUSH_BUFFER)
        self._write_fifo(data)
        chip.Write_MFRC522(chip.CommandReg, chip.PCD_CALCCRC)
        self._wait(chip.DivIrqReg, CRC_IRQ, "CRC")
        return bytes((chip.Read_MFRC522(chip.CRCResultRegL), chip.Read_MFRC522(chip.CRCResultRegM)))

    def _wait(self, register: int, mask: int, what: str) -> int:
        """Read an interrupt register until a bit of `mask` is set, sleeping (never
        spinning) between reads; a chip whose timer never fires is not running."""
        for _ in range(WAIT_READS):
            value = self._chip.Read_MFRC522(register)
            if value & SET_BIT:
                raise ReaderFault(f"interrupt register reads 0x{value:02X} (MISO floating high?)")
            if value & mask:
                return value
            self._sleep(WAIT_STEP)
        raise ReaderFault(f"no interrupt {WAIT_READS * WAIT_STEP * 1000:.0f} ms into a {what} (chip reset or unplugged?)")

    # The driver writes and reads one register per SPI transfer; the chip also
    # takes bursts (datasheet 8.1.2): one address, then every byte of the FIFO.

    def _write_fifo(self, data: bytes) -> None:
        self._spi.xfer2([self._chip.FIFODataReg << 1, *data])

    def _read_fifo(self, count: int) -> bytes:
        address = 0x80 | self._chip.FIFODataReg << 1
        return bytes(self._spi.xfer2([address] * count + [0])[1:])
