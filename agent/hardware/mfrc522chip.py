"""The MFRC522 as an ISO 14443 A transceiver: register access over SPI, a
timer-aware `transceive(frame, timeout)` with the chip's own CRC, and the
ISO 14443-3 steps a reader needs (`wake`, `activate`, `halt`).

SPI (datasheet 8.1.2): a register is written with `[address << 1, value]` and
read with `[0x80 | address << 1, 0]`; one transfer may read several registers
(`[a1, a2, …, 0]`) or write many bytes to one (the FIFO). Each transfer costs
about 30 us of CPU on a Raspberry Pi, so this port counts them: it writes a
configuration register only when its value changes, reads the status
registers in one burst and the whole FIFO in another, and sleeps through the
time a frame takes on the air instead of reading the interrupt register in a
loop.

`transceive` is the port the ISO 14443-4 layer (agent.hardware.isodep) builds
on: any frame that fits the 64-byte FIFO, the chip's timer set to the timeout
the protocol asks for (up to about 39 s), CRC_A appended and checked by the
chip (`crc=True`, the received CRC kept out of the answer), the answer read
whole; NoAnswer when none comes, BadFrame for a garbled one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.hardware import isodep
from agent.hardware.isodep import CARRIER_HZ, NoAnswer

# Registers (datasheet 9.2).
COMMAND, COMM_IRQ, ERROR, FIFO_DATA, FIFO_LEVEL, CONTROL, BIT_FRAMING = 0x01, 0x04, 0x06, 0x09, 0x0A, 0x0C, 0x0D
MODE, TX_MODE, RX_MODE, TX_ASK = 0x11, 0x12, 0x13, 0x15
T_MODE, T_PRESCALER, T_RELOAD_H, T_RELOAD_L, VERSION = 0x2A, 0x2B, 0x2C, 0x2D, 0x37

IDLE, TRANSCEIVE = 0x00, 0x0C  # CommandReg
START_SEND = 0x80  # BitFramingReg
FLUSH_BUFFER = 0x80  # FIFOLevelReg
CLEAR_ALL_IRQ = 0x7F  # CommIrqReg with Set1 = 0: clears every flag written as 1
RX_IRQ, ERR_IRQ, TIMER_IRQ = 0x20, 0x02, 0x01  # CommIrqReg
SET_BIT = 0x80  # Set1 is write-only: a chip never reads it as 1
CRC_EN = 0x80  # TxModeReg TxCRCEn, RxModeReg RxCRCEn
T_AUTO = 0x80  # TModeReg: the timer starts when sending ends, and stops when an answer begins
FORCE_100_ASK = 0x40  # TxASKReg, as type A needs
CRC_PRESET_6363 = 0x3D  # ModeReg: CRC_A's preset
FIFO_SIZE = 64
KNOWN_VERSIONS = {0x91: "MFRC522 v1.0", 0x92: "MFRC522 v2.0", 0x88: "FM17522 clone", 0x12: "counterfeit MFRC522"}

# One status burst: CommIrqReg, ErrorReg, FIFOLevelReg, ControlReg.
STATUS_BURST = [0x80 | COMM_IRQ << 1, 0x80 | ERROR << 1, 0x80 | FIFO_LEVEL << 1, 0x80 | CONTROL << 1, 0]

# Time on the air (ISO 14443-2/3 at 106 kbit/s).
BIT_SECONDS = 128 / CARRIER_HZ
FRAME_DELAY = 1172 / CARRIER_HZ  # FDT: the end of the reader's frame to the card's answer
TICK_SECONDS = (2 * 169 + 1) / CARRIER_HZ  # the timer's usual prescaler: 25 us ticks, up to 1.6 s
LONG_PRESCALER = 0xFFF  # for longer timeouts: 604 us ticks, up to 39.6 s
WAIT_FIRST_STEP = 0.00025  # then doubling: how often a late answer is looked for
WAIT_LONGEST_STEP = 0.002
WAIT_MARGIN = 0.02  # past timeout + the longest answer: the chip is not running

# ISO 14443-3 type A.
WUPA = bytes([0x52])  # wakes IDLE and HALT cards (REQA would miss a card halted by the last read)
HLTA = bytes([0x50, 0x00, 0x57, 0xCD])  # with its CRC_A
SELECT = (0x93, 0x95, 0x97)  # cascade levels 1-3
NVB_ANTICOLLISION = 0x20  # no UID bits known: every card sends its whole level
NVB_SELECT = 0x70  # all 40 bits of the level follow
CASCADE_TAG = 0x88
SAK_CASCADE = 0x04  # the UID continues at the next cascade level
# The answers to WUPA, anticollision and SELECT begin a fixed FDT (86 or 91 us) after the
# reader's frame: one timer value for them all, so that its registers are never rewritten.
ACTIVATION_TIMEOUT = 0.0004
SETTLE = 4 * BIT_SECONDS  # after a frame's last bit, before its flags are looked at
HALT_LISTEN = 0.0001  # after HLTA: the card must not be spoken to within its FDT


class ReaderFault(Exception):
    """The chip does not answer as an MFRC522 should: unplugged, unpowered, miswired, reset."""


class BadFrame(isodep.BadFrame):
    """A card answered, but garbled (RF noise, two cards at once): try again."""


@dataclass(frozen=True)
class Activation:
    """A card selected by `MFRC522Chip.activate`: its whole UID and its SAK."""

    uid: bytes
    sak: int


def air_time(bits: int) -> float:
    """Seconds a frame of `bits` data bits takes on the air: a parity bit per whole
    byte, a start bit and the end of frame."""
    return (bits + bits // 8 + 2) * BIT_SECONDS


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


CRC_TABLE = _crc_table()


def crc_a(data: bytes) -> bytes:
    """ISO 14443-3 CRC_A, low byte first, as sent: the activation's few bytes cost
    less here than toggling the chip's CRC registers twice per exchange."""
    crc = 0x6363
    for byte in data:
        crc = (crc >> 8) ^ CRC_TABLE[(crc ^ byte) & 0xFF]
    return bytes((crc & 0xFF, crc >> 8))


class MFRC522Chip:
    """One MFRC522 behind an opened SPI device (`spi.xfer2`), set up for type A.

    `sleep` waits for the chip (time.sleep, or an emulated chip's clock).
    Build a new one after every reset: it remembers what it wrote.
    """

    def __init__(self, spi: Any, sleep: Callable[[float], None]) -> None:
        self._xfer = spi.xfer2
        self._sleep = sleep
        self._written: dict[int, int] = {}
        self._stale = True  # CommIrqReg may hold RxIRq or ErrIRq from the last exchange
        self._dirty_fifo = True  # the FIFO may hold bytes nobody read

    # Registers.

    def write(self, register: int, value: int) -> None:
        self._xfer([register << 1, value])

    def read(self, register: int) -> int:
        return self._xfer([0x80 | register << 1, 0])[1]

    def _keep(self, register: int, value: int) -> None:
        """Write a configuration register, unless it already holds `value`."""
        if self._written.get(register) != value:
            self.write(register, value)
            self._written[register] = value

    def setup(self) -> str:
        """Check the version and set the chip up for type A (after a reset); the
        version's name. Raises ReaderFault for anything but an MFRC522."""
        version = self.read(VERSION)
        if version not in KNOWN_VERSIONS:
            hint = ("no answer: check wiring, power and that SPI is enabled" if version in (0x00, 0xFF)
                    else "not an MFRC522")
            raise ReaderFault(f"VersionReg reads 0x{version:02X}, expected 0x91 or 0x92 ({hint})")
        for register, value in ((TX_ASK, FORCE_100_ASK), (MODE, CRC_PRESET_6363), (TX_MODE, 0), (RX_MODE, 0)):
            self._keep(register, value)
        return KNOWN_VERSIONS[version]

    def _timer(self, timeout: float) -> None:
        ticks = round(timeout / TICK_SECONDS)
        prescaler = 169
        if ticks > 0x10000:
            prescaler = LONG_PRESCALER
            ticks = round(timeout * CARRIER_HZ / (2 * prescaler + 1))
        reload = min(max(ticks, 1), 0x10000) - 1
        self._keep(T_MODE, T_AUTO | prescaler >> 8)
        self._keep(T_PRESCALER, prescaler & 0xFF)
        self._keep(T_RELOAD_H, reload >> 8)
        self._keep(T_RELOAD_L, reload & 0xFF)

    # Exchanges.

    def _send(self, frame: bytes, timeout: float, crc: bool, last_bits: int, fresh: bool) -> None:
        """Start a Transceive of `frame`: its answer, or the timer, follow on the air.
        `fresh` clears every interrupt flag first, so that TimerIRq means this timeout."""
        xfer = self._xfer
        xfer([COMMAND << 1, IDLE])  # ends the previous Transceive, whose receiver may still wait
        if fresh or self._stale:
            xfer([COMM_IRQ << 1, CLEAR_ALL_IRQ])
            self._stale = False
        if self._dirty_fifo:
            xfer([FIFO_LEVEL << 1, FLUSH_BUFFER])
            self._dirty_fifo = False
        xfer([FIFO_DATA << 1, *frame])
        self._keep(TX_MODE, CRC_EN if crc else 0)
        self._keep(RX_MODE, CRC_EN if crc else 0)
        self._timer(timeout)
        xfer([COMMAND << 1, TRANSCEIVE])
        xfer([BIT_FRAMING << 1, START_SEND | last_bits])

    def _await(self, first_wait: float, timeout: float) -> list[int]:
        """Sleep `first_wait`, then read the status until an answer or the timer; the
        status burst [_, CommIrqReg, ErrorReg, FIFOLevelReg, ControlReg]."""
        self._sleep(first_wait)
        waited, step = first_wait, WAIT_FIRST_STEP
        limit = timeout + air_time(8 * FIFO_SIZE) + WAIT_MARGIN
        while True:
            status = self._xfer(STATUS_BURST)
            irq = status[1]
            if irq & SET_BIT:
                raise ReaderFault(f"interrupt register reads 0x{irq:02X} (MISO floating high?)")
            if irq & (RX_IRQ | ERR_IRQ | TIMER_IRQ):
                return status
            if waited > limit:
                raise ReaderFault(f"no interrupt {waited * 1000:.0f} ms into a transceive "
                                  "(chip reset or unplugged?)")
            self._sleep(step)
            waited += step
            step = min(step * 2, WAIT_LONGEST_STEP)

    def transceive(self, frame: bytes, timeout: float, *, crc: bool = True, last_bits: int = 0,
                   expect: int = 0) -> bytes:
        """Send `frame` and return the card's answer; NoAnswer when none began within
        `timeout` seconds of the frame's end.

        `crc`: the chip appends CRC_A and checks the answer's (and drops it from
        the answer). `last_bits`: how many bits of the last byte to send (0: all
        8; 7 for REQA/WUPA). `expect`: the answer's length in bytes when known,
        so the first look comes when it must be in. Raises BadFrame for an
        answer garbled by noise or a collision, ReaderFault for a chip that
        does not run.
        """
        if not 0 < len(frame) <= FIFO_SIZE:
            raise ValueError(f"a frame of {len(frame)} bytes does not fit the {FIFO_SIZE}-byte FIFO")
        bits = 8 * len(frame) - (8 - last_bits if last_bits else 0) + (16 if crc else 0)
        self._send(frame, timeout, crc, last_bits, fresh=True)
        answer = air_time(8 * expect + (16 if crc else 0)) if expect else 0.0
        status = self._await(air_time(bits) + FRAME_DELAY + answer + SETTLE, timeout)
        self._stale = True
        irq, error, level, control = status[1], status[2], status[3] & 0x7F, status[4] & 0x07
        if irq & ERR_IRQ:
            self._dirty_fifo = True
            raise BadFrame(f"ErrorReg 0x{error:02X}")
        if not irq & RX_IRQ:
            raise NoAnswer(f"no answer within {timeout * 1000:g} ms")
        if control:
            self._dirty_fifo = True
            raise BadFrame("an answer that does not end on a byte boundary")
        if not level:
            return b""
        address = 0x80 | FIFO_DATA << 1
        return bytes(self._xfer([address] * level + [0])[1:])

    def wake(self) -> bool:
        """WUPA with a short timer: did any card answer, even garbled?

        The cheap empty-field probe: in an empty field it costs five transfers.
        TimerIRq is cleared only after an exchange that may have left RxIRq set,
        so in an empty field it stays latched, and a chip that was reset (its
        flags cleared, its timer stopped) shows at once: no TimerIRq comes.
        """
        self._send(WUPA, ACTIVATION_TIMEOUT, False, 7, fresh=False)
        self._sleep(air_time(7) + FRAME_DELAY + air_time(16) + SETTLE)
        irq = self.read(COMM_IRQ)
        if irq & SET_BIT:
            raise ReaderFault(f"interrupt register reads 0x{irq:02X} (MISO floating high?)")
        if not irq & (RX_IRQ | ERR_IRQ | TIMER_IRQ):
            irq = self._await(WAIT_FIRST_STEP, ACTIVATION_TIMEOUT)[1]
        if irq & (RX_IRQ | ERR_IRQ):
            self._stale = self._dirty_fifo = True  # the ATQA is not needed: flushed by the next exchange
            return True
        return False

    def activate(self) -> Activation:
        """Anticollision and SELECT through every cascade level of the card that
        answered `wake`: its whole UID (4, 7 or 10 bytes) and SAK; the card is
        then ACTIVE. Raises BadFrame for a garbled or missing answer, a BCC or
        CRC that does not match, or two cards at once."""
        uid = b""
        for select in SELECT:
            level = self._answer(bytes([select, NVB_ANTICOLLISION]), 5, "anticollision")
            if level[0] ^ level[1] ^ level[2] ^ level[3] != level[4]:
                raise BadFrame(f"BCC mismatch in {level.hex()}")
            command = bytes([select, NVB_SELECT]) + level
            answer = self._answer(command + crc_a(command), 3, "SELECT")
            if crc_a(answer[:1]) != answer[1:]:
                raise BadFrame(f"CRC mismatch in SAK {answer.hex()}")
            sak = answer[0]
            if not sak & SAK_CASCADE:
                return Activation(uid + level[:4], sak)
            if level[0] != CASCADE_TAG:
                raise BadFrame(f"SAK says the UID goes on, but {level.hex()} has no cascade tag")
            uid += level[1:4]
        raise BadFrame("UID longer than three cascade levels")

    def _answer(self, frame: bytes, length: int, what: str) -> bytes:
        try:
            answer = self.transceive(frame, ACTIVATION_TIMEOUT, crc=False, expect=length)
        except NoAnswer:
            raise BadFrame(f"no answer to {what}") from None
        if len(answer) != length:
            raise BadFrame(f"{what} answer of {len(answer)} bytes, expected {length}")
        return answer

    def select_card(self) -> tuple[bytes, int] | None:
        """The UID and SAK of a card now selected (ACTIVE), or None when none could be:
        the port `fabpass cards provision` takes a card from."""
        if not self.wake():
            return None
        try:
            card = self.activate()
        except BadFrame:
            return None
        return card.uid, card.sak

    def halt(self) -> None:
        """HLTA: the selected card goes to HALT, where the next WUPA (and only a
        WUPA) wakes it. Nothing answers it; this waits only for it to be sent."""
        self._send(HLTA, ACTIVATION_TIMEOUT, False, 0, fresh=False)
        self._sleep(air_time(8 * len(HLTA)) + HALT_LISTEN)
        self._stale = True  # its timer will fire
