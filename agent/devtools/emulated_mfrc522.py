"""An emulated MFRC522 on an emulated SPI bus, virtual ISO 14443 A cards, and
doubles for `spidev` and `RPi.GPIO`, so that the unmodified `mfrc522` driver and
the reader backend run without a Raspberry Pi: in the tests and in `fabpass bench`.

The chip follows the NXP MFRC522 datasheet where the driver and the reader
backend can tell: SPI single and burst register access (8.1.2), the 64-byte
FIFO, the command register (Idle, CalcCRC, Transceive, SoftReset), interrupt
flags with their Set1/Set2 write semantics, the timer (TAuto, prescaler,
reload; it stops when an answer begins), the CRC coprocessor, TxCRCEn and
RxCRCEn (a received frame's CRC_A is checked, CRCErr when wrong, and kept out
of the FIFO), bit-oriented framing (TxLastBits, RxAlign, RxLastBits),
collisions (CollErr, CollReg) and the antenna switch. Anything else it is asked
to do fails loudly.

Frames take their time on the air (106 kbit/s: 128 carrier cycles a bit, a
parity bit per byte, start and end of frame), and a card answers a frame delay
(ISO 14443-3 FDT, 1172/fc) after the reader's frame ends, later by the time it
works on its answer (`Card.answer_delay`; deaf meanwhile): RxIRq is set when
the answer's last bit is in. `pull_after` takes a card away after an exact
number of frames (a card pulled in the middle of an exchange). A card placed on the reader answers only once
`ready_after` seconds have passed in the field (ISO 14443-3 bounds it at 5 ms).
`Noise` corrupts a share of the cards' answers at random, from a seed.

Time comes from a clock. `EmulatedTime` (the default) is deterministic: every
SPI transfer takes TRANSFER_SECONDS, `sleep` moves the clock on, and nothing
else does. `RealTime` runs on the host's monotonic clock and spends
TRANSFER_SECONDS of CPU in each transfer, so a reader thread and an agent
measured beside it see the same costs as on a Pi. TRANSFER_SECONDS is the cost model: about 30 us of CPU per spidev
transfer on a Raspberry Pi.
"""

from __future__ import annotations

import errno
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

TRANSFER_SECONDS = 30e-6
CARRIER_HZ = 13.56e6
BIT_SECONDS = 128 / CARRIER_HZ  # 106 kbit/s
FRAME_DELAY = 1172 / CARRIER_HZ  # ISO 14443-3 FDT: the end of the reader's frame to the card's answer
ISO_READY_AFTER = 0.005  # ISO 14443-3: a card accepts a request within 5 ms of entering the field

# Registers.
COMMAND, COMM_IRQ, DIV_IRQ, ERROR = 0x01, 0x04, 0x05, 0x06
FIFO_DATA, FIFO_LEVEL, CONTROL, BIT_FRAMING, COLL = 0x09, 0x0A, 0x0C, 0x0D, 0x0E
MODE, TX_MODE, RX_MODE, TX_CONTROL = 0x11, 0x12, 0x13, 0x14
CRC_RESULT_M, CRC_RESULT_L = 0x21, 0x22
T_MODE, T_PRESCALER, T_RELOAD_H, T_RELOAD_L = 0x2A, 0x2B, 0x2C, 0x2D
VERSION = 0x37
# Power-on values of the registers that matter here (datasheet 9.3); others are 0.
RESET_VALUES = {COMMAND: 0x20, 0x02: 0x80, 0x08: 0x00, 0x0B: 0x08, CONTROL: 0x10, COLL: 0xA0,
                MODE: 0x3F, TX_CONTROL: 0x80, 0x16: 0x10, 0x17: 0x84, 0x18: 0x84, 0x19: 0x4D,
                CRC_RESULT_M: 0xFF, CRC_RESULT_L: 0xFF, 0x24: 0x26, 0x26: 0x48, 0x27: 0x88}

IDLE, CALC_CRC, TRANSCEIVE, SOFT_RESET = 0x0, 0x3, 0xC, 0xF
TX_IRQ, RX_IRQ, ERR_IRQ, TIMER_IRQ = 0x40, 0x20, 0x02, 0x01
CRC_IRQ = 0x04
BUFFER_OVFL, COLL_ERR, CRC_ERR, PARITY_ERR = 0x10, 0x08, 0x04, 0x02
CRC_EN = 0x80  # TxModeReg TxCRCEn, RxModeReg RxCRCEn
CRC_PRESETS = (0x0000, 0x6363, 0xA671, 0xFFFF)  # ModeReg CRCPreset[1:0]

# ISO 14443-3 type A.
REQA, WUPA, HLTA, CASCADE_TAG = 0x26, 0x52, 0x50, 0x88
SELECT = (0x93, 0x95, 0x97)


def crc_a(data: bytes, preset: int = 0x6363) -> bytes:
    """ISO 14443-3 CRC_A (reflected CCITT polynomial), low byte first as transmitted."""
    crc = preset
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


def to_bits(data: bytes, last_bits: int = 0) -> list[int]:
    """Bits in air order (least significant first); the last byte holds `last_bits` (0: all 8)."""
    bits = [(byte >> i) & 1 for byte in data for i in range(8)]
    return bits[: len(bits) - 8 + last_bits] if last_bits and bits else bits


def from_bits(bits: list[int]) -> bytes:
    return bytes(sum(bit << i for i, bit in enumerate(bits[at:at + 8])) for at in range(0, len(bits), 8))


def air_time(bits: int) -> float:
    """Seconds a frame of `bits` data bits takes at 106 kbit/s: a parity bit per
    whole byte, a start bit and the end of frame."""
    return (bits + bits // 8 + 2) * BIT_SECONDS


# Clocks.


class EmulatedTime:
    """Deterministic time: transfers and sleeps move it on, nothing else."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def transfer(self) -> None:
        """A transfer begins: it ends TRANSFER_SECONDS later."""
        self.now += TRANSFER_SECONDS

    def spend(self, begun: float | None) -> None:
        """A transfer ends (its time was taken when it began)."""

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class RealTime:
    """The host's clock; a transfer spends TRANSFER_SECONDS of CPU, the emulator's
    own work included. (spidev's ioctl would release the GIL meanwhile; a wait
    that did here, sleep(0), costs a system call of 20 to 40 us on a VM, longer
    than the transfer, so this one keeps it.)"""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)
    transfer = staticmethod(time.perf_counter)

    @staticmethod
    def spend(begun: float) -> None:
        end = begun + TRANSFER_SECONDS
        while time.perf_counter() < end:
            pass


class Card:
    """An ISO 14443 A card (PICC) with a 4, 7 or 10 byte UID and the ISO 14443-3
    state machine: OFF, IDLE, READY, ACTIVE, HALT (READY* and ACTIVE* are READY
    and ACTIVE with `from_halt`, and fall back to HALT instead of IDLE).

    `ready_after`: seconds in the field before it answers anything (0: at once).
    `answer_delay`: seconds beyond the frame delay time its last answer takes; a
    card that computes (an ISO 14443-4 card, say) sets it as it answers, and
    hears no frame until it begins to send that answer.
    """

    answer_delay = 0.0

    SAK_BY_SIZE = {4: 0x08, 7: 0x00, 10: 0x20}  # MIFARE Classic 1K, Ultralight/NTAG, DESFire
    ATQA_BY_SIZE = {4: b"\x04\x00", 7: b"\x44\x00", 10: b"\x84\x00"}

    def __init__(self, uid: bytes | str, ready_after: float = 0.0) -> None:
        self.uid = bytes.fromhex(uid) if isinstance(uid, str) else bytes(uid)
        if len(self.uid) not in self.SAK_BY_SIZE:
            raise ValueError(f"a type A UID has 4, 7 or 10 bytes, not {len(self.uid)}")
        self.ready_after = ready_after
        self.ready_at = 0.0  # set by the chip whose field powers it
        self.state = "OFF"
        self.from_halt = False
        self.level = 0
        self.answers = 0  # ATQAs sent: how many polls saw the card

    def cascade_levels(self) -> list[bytes]:
        """The 5 bytes each cascade level sends: 4 UID bytes (or CT + 3) and BCC."""
        rest, levels = self.uid, []
        while rest:
            part = rest if len(rest) == 4 else bytes([CASCADE_TAG]) + rest[:3]
            rest = b"" if len(rest) == 4 else rest[3:]
            levels.append(part + bytes([part[0] ^ part[1] ^ part[2] ^ part[3]]))
        return levels

    def power(self, on: bool) -> None:
        self.state, self.from_halt, self.level = ("IDLE" if on else "OFF"), False, 0

    def receive(self, bits: list[int]) -> list[int] | None:
        """A frame from the reader (in air order) -> the card's answer, or None for silence."""
        if self.state == "OFF":
            return None
        data = from_bits(bits)
        if len(bits) == 7 and data[0] in (REQA, WUPA):
            if self.state == "IDLE" or (self.state == "HALT" and data[0] == WUPA):
                self.state, self.from_halt, self.level = "READY", self.state == "HALT", 0
                self.answers += 1
                return to_bits(self.ATQA_BY_SIZE[len(self.uid)])
            return self._fall_back()
        if self.state == "READY" and len(bits) >= 16 and data[0] == SELECT[self.level]:
            return self._anticollision_or_select(bits, data)
        if self.state == "ACTIVE" and data == bytes([HLTA, 0]) + crc_a(bytes([HLTA, 0])):
            self.state = "HALT"
            return None
        return self._fall_back()

    def _anticollision_or_select(self, bits: list[int], data: bytes) -> list[int] | None:
        levels = self.cascade_levels()
        mine = to_bits(levels[self.level])
        nvb = data[1]
        if nvb == 0x70:
            if len(data) != 9 or data[2:7] != levels[self.level] or crc_a(data[:7]) != data[7:]:
                return self._fall_back()
            last = self.level == len(levels) - 1
            sak = self.SAK_BY_SIZE[len(self.uid)] if last else 0x04
            if last:
                self.state = "ACTIVE"
            else:
                self.level += 1
            return to_bits(bytes([sak]) + crc_a(bytes([sak])))
        known = (nvb >> 4) * 8 + (nvb & 0x0F) - 16
        if not 0 <= known < 40 or len(bits) != 16 + known or bits[16:] != mine[:known]:
            return self._fall_back()
        return mine[known:]

    def _fall_back(self) -> None:
        """Anything unexpected sends a READY or ACTIVE card back to IDLE, or to HALT
        if it was woken from there; an IDLE or HALT card stays put. No answer."""
        if self.state in ("READY", "ACTIVE"):
            self.state, self.level = ("HALT" if self.from_halt else "IDLE"), 0
        return None


FAULT_KINDS = ("clean", "drop", "flip", "parity", "collision")


@dataclass
class Fault:
    """RF trouble on the next card answer: `drop` it, `flip` one bit, a `parity`
    error, a `collision` at a bit (as when a second card answers), or none
    (`clean`: lets a list of faults aim past the first answers)."""

    kind: str
    bit: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}")


@dataclass
class Noise:
    """RF noise: each card answer is corrupted with probability `rate`, by one of
    `kinds` at a random bit, drawn from a generator seeded with `seed`."""

    rate: float
    seed: int = 0
    kinds: tuple[str, ...] = ("flip", "parity", "drop")
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1 or not set(self.kinds) <= set(FAULT_KINDS):
            raise ValueError(f"bad noise: rate {self.rate}, kinds {self.kinds}")
        self._rng = random.Random(self.seed)

    def fault(self, bits: int) -> Fault | None:
        if self._rng.random() >= self.rate:
            return None
        return Fault(self._rng.choice(self.kinds), self._rng.randrange(max(1, bits)))


@dataclass
class _Answer:
    """A card's answer on its way: it begins at `start` and is all in at `end`."""

    start: float
    end: float
    bits: list[int]
    collision: int | None
    fault: Fault | None
    framing: int


class EmulatedMFRC522:
    """The chip behind one SPI chip select. Thread-safe: the reader thread talks
    SPI while a test places cards, injects faults or pulls the plug."""

    def __init__(self, version: int = 0x92, clock: EmulatedTime | RealTime | None = None,
                 noise: Noise | None = None) -> None:
        self.version = version
        self.clock = clock or EmulatedTime()
        self.noise = noise
        self.transfers = 0
        self.timeouts = 0  # TimerIRq raised
        self.requests = 0  # REQA/WUPA frames sent: polls
        self.open_handles = 0
        self.spi_error: OSError | None = None
        self.plugged = True
        self.floating = 0x00  # what MISO reads while unplugged
        self.cards: list[Card] = []
        self.leaving: dict[Card, int] = {}  # a card pulled away after it hears that many more frames
        self.faults: deque[Fault] = deque()
        self._lock = threading.RLock()
        self.power_on_reset()

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    # What a test does to the world.

    def power_on_reset(self) -> None:
        """Registers to their power-on values, as after a brown-out or SoftReset."""
        with self._lock:
            self.regs = bytearray(64)
            for register, value in RESET_VALUES.items():
                self.regs[register] = value
            self.fifo = bytearray()
            self.comm_irq, self.div_irq, self.error = 0x14, 0x00, 0x00
            self.timer_deadline: float | None = None
            self.pending: _Answer | None = None
            self.crc = 0
            self._power_cards()

    def place(self, card: Card) -> Card:
        with self._lock:
            self.cards.append(card)
            self._power(card, self.field_on)
        return card

    def remove(self, card: Card) -> None:
        with self._lock:
            self.cards.remove(card)
            self.leaving.pop(card, None)
            card.power(False)

    def pull_after(self, card: Card, frames: int) -> None:
        """Take `card` away once it has heard `frames` more of the reader's frames: a
        card pulled from the reader in the middle of an exchange, at an exact point."""
        with self._lock:
            self.leaving[card] = frames

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def unplug(self, floating: int = 0x00) -> None:
        with self._lock:
            self.plugged, self.floating = False, floating
            self._power_cards()

    def plug(self) -> None:
        with self._lock:
            self.plugged = True
            self.power_on_reset()

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    def monotonic(self) -> float:
        return self.clock.monotonic()

    @property
    def field_on(self) -> bool:
        return self.plugged and bool(self.regs[TX_CONTROL] & 0x03)

    # SPI.

    def xfer2(self, data: list[int]) -> list[int]:
        with self._lock:
            if self.spi_error is not None:
                raise self.spi_error
            begun = self.clock.transfer()
            self.transfers += 1
            self._run_rf()
            answer = self._transfer(data)
            self.clock.spend(begun)
            return answer

    def _transfer(self, data: list[int]) -> list[int]:
        if not self.plugged:
            return [self.floating] * len(data)
        first = data[0]
        assert first & 0x01 == 0, f"address byte 0x{first:02X}: bit 0 must be 0"
        if first & 0x80:  # read: each byte names the next register, the last is 0
            assert data[-1] == 0 and all(a & 0x81 == 0x80 for a in data[:-1]), f"bad burst read {data}"
            return [0] + [self._read((a >> 1) & 0x3F) for a in data[:-1]]
        for value in data[1:]:  # write: every byte goes to the same register
            self._write(first >> 1, value)
        return [0] * len(data)

    def _read(self, register: int) -> int:
        if register == FIFO_DATA:
            return self.fifo.pop(0) if self.fifo else 0
        if register == FIFO_LEVEL:
            return len(self.fifo)
        if register == COMM_IRQ:
            return self.comm_irq
        if register == DIV_IRQ:
            return self.div_irq
        if register == ERROR:
            return self.error
        if register == VERSION:
            return self.version
        return self.regs[register]

    def _write(self, register: int, value: int) -> None:
        if register == FIFO_DATA:
            self._push_fifo(value)
        elif register == FIFO_LEVEL:
            if value & 0x80:
                self.fifo.clear()
                self.error &= ~BUFFER_OVFL
        elif register == COMM_IRQ:
            self.comm_irq = self.comm_irq | (value & 0x7F) if value & 0x80 else self.comm_irq & ~value
        elif register == DIV_IRQ:
            self.div_irq = self.div_irq | (value & 0x7F) if value & 0x80 else self.div_irq & ~value
        elif register == COMMAND:
            self._command(value)
        elif register == BIT_FRAMING:
            self.regs[BIT_FRAMING] = value
            if value & 0x80 and self.regs[COMMAND] & 0x0F == TRANSCEIVE:
                self._transmit()
        elif register == TX_CONTROL:
            self.regs[TX_CONTROL] = value
            self._power_cards()
        elif register not in (ERROR, 0x07, VERSION, CRC_RESULT_M, CRC_RESULT_L):  # read-only
            self.regs[register] = value

    def _push_fifo(self, value: int) -> None:
        if len(self.fifo) >= 64:
            self.error |= BUFFER_OVFL
            return
        if self.regs[COMMAND] & 0x0F == CALC_CRC:
            self._calc_crc(bytes([value]))
        else:
            self.fifo.append(value)

    def _command(self, value: int) -> None:
        command = value & 0x0F
        if command == SOFT_RESET:
            self.power_on_reset()
            return
        if command not in (IDLE, CALC_CRC, TRANSCEIVE):
            raise NotImplementedError(f"command 0x{command:X} is not emulated")
        self.regs[COMMAND] = value & 0x30 | command
        self.pending = None  # a new command switches the receiver off: an answer on its way is lost
        if command == CALC_CRC:
            self.crc = CRC_PRESETS[self.regs[MODE] & 0x03]
            data, self.fifo = bytes(self.fifo), bytearray()
            self._calc_crc(data)

    def _calc_crc(self, data: bytes) -> None:
        """The coprocessor takes the FIFO's bytes, and any written while CalcCRC runs."""
        low, high = crc_a(data, self.crc)
        self.crc = high << 8 | low
        self.regs[CRC_RESULT_L], self.regs[CRC_RESULT_M] = low, high
        self.div_irq |= CRC_IRQ

    # RF.

    def _power_cards(self) -> None:
        for card in self.cards:
            if (card.state != "OFF") != self.field_on:
                self._power(card, self.field_on)

    def _power(self, card: Card, on: bool) -> None:
        card.power(on)
        card.ready_at = self.now + card.ready_after

    def _timer_period(self) -> float:
        prescaler = (self.regs[T_MODE] & 0x0F) << 8 | self.regs[T_PRESCALER]
        reload = self.regs[T_RELOAD_H] << 8 | self.regs[T_RELOAD_L]
        return (2 * prescaler + 1) * (reload + 1) / CARRIER_HZ

    def _run_rf(self) -> None:
        """What happened on the air since the last transfer: the timer, an answer arriving."""
        now = self.now
        answer = self.pending
        if self.timer_deadline is not None:
            if answer is not None and answer.start < self.timer_deadline:
                self.timer_deadline = None  # the timer stops as the answer begins
            elif now >= self.timer_deadline:
                self.timer_deadline = None
                self.comm_irq |= TIMER_IRQ
                self.timeouts += 1
        if answer is not None and now >= answer.end:
            self.pending = None
            self._receive(answer)

    def _transmit(self) -> None:
        framing = self.regs[BIT_FRAMING]
        data, self.fifo = bytes(self.fifo), bytearray()
        bits = to_bits(data, framing & 0x07)
        if self.regs[TX_MODE] & CRC_EN:
            assert framing & 0x07 == 0, "TxCRCEn with a bit-oriented frame"
            bits += to_bits(crc_a(data, CRC_PRESETS[self.regs[MODE] & 0x03]))
        if len(bits) == 7 and data[0] in (REQA, WUPA):
            self.requests += 1
        self.error &= BUFFER_OVFL
        sent = self.now + air_time(len(bits))
        self.comm_irq |= TX_IRQ
        # TAuto: the timer starts when sending ends.
        self.timer_deadline = sent + self._timer_period() if self.regs[T_MODE] & 0x80 else None
        self.pending = None
        now = self.now
        awake = [card for card in self.cards if now >= card.ready_at] if self.field_on else []
        for card in [card for card in awake if card in self.leaving]:
            self.leaving[card] -= 1
            if self.leaving[card] < 0:
                self.remove(card)
                awake.remove(card)
        answering = [(a, card) for card in awake if (a := card.receive(bits)) is not None]
        answer, collision = self._superpose([a for a, _ in answering])
        delay = max((card.answer_delay for _, card in answering), default=0.0)
        for _, card in answering:  # a card working on its answer hears nothing until it sends it
            card.ready_at = max(card.ready_at, sent + FRAME_DELAY + card.answer_delay)
        fault = None
        if answer:
            if self.faults:
                fault = self.faults.popleft()
            elif self.noise is not None:
                fault = self.noise.fault(len(answer))
        if not answer or (fault is not None and fault.kind == "drop"):
            return
        start = sent + FRAME_DELAY + delay
        self.pending = _Answer(start, start + air_time(len(answer)), answer, collision, fault, framing)

    def _receive(self, pending: _Answer) -> None:
        """The answer is in: into the FIFO, with the flags a real chip would raise."""
        answer, collision, fault = list(pending.bits), pending.collision, pending.fault
        if fault is not None and fault.kind == "flip":
            answer[fault.bit % len(answer)] ^= 1
        if fault is not None and fault.kind == "parity":
            self.error |= PARITY_ERR
        if fault is not None and fault.kind == "collision":
            at = fault.bit % len(answer)
            collision = at if collision is None else min(collision, at)
        rx_align = (pending.framing >> 4) & 0x07
        if collision is not None:
            position = rx_align + collision + 1
            self.error |= COLL_ERR
            self.regs[COLL] = (position & 0x1F) | (0x20 if position > 32 else 0)
        stored = [0] * rx_align + answer
        data = from_bits(stored)
        if self.regs[RX_MODE] & CRC_EN:
            # RxCRCEn: the chip checks the frame's CRC_A and keeps it out of the FIFO.
            if len(stored) % 8 or len(data) < 3 or crc_a(data[:-2], CRC_PRESETS[self.regs[MODE] & 0x03]) != data[-2:]:
                self.error |= CRC_ERR
            else:
                data = data[:-2]
        for byte in data:
            self._push_fifo(byte)
        self.regs[CONTROL] = (self.regs[CONTROL] & 0xF8) | (len(stored) % 8)
        self.comm_irq |= RX_IRQ | (ERR_IRQ if self.error else 0)

    @staticmethod
    def _superpose(answers: list[list[int]]) -> tuple[list[int], int | None]:
        """Several cards answering at once: where their bits differ the reader
        sees a collision (and, Manchester-coded, a 1)."""
        length = max((len(a) for a in answers), default=0)
        merged, collision = [], None
        for i in range(length):
            seen = {a[i] for a in answers if i < len(a)}
            if len(seen) > 1 and collision is None:
                collision = i
            merged.append(max(seen))
        return merged, collision


# Doubles for the driver's imports.


class SpiDev:
    """spidev.SpiDev on the emulated bus: `open(bus, device)` finds the chip at that chip select."""

    def __init__(self, chips: dict[tuple[int, int], EmulatedMFRC522]) -> None:
        self._chips = chips
        self._chip: EmulatedMFRC522 | None = None
        self.max_speed_hz = 500_000
        self.mode = 0

    def open(self, bus: int, device: int) -> None:
        if (bus, device) not in self._chips:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", f"/dev/spidev{bus}.{device}")
        self._chip = self._chips[(bus, device)]
        self._chip.open_handles += 1

    def xfer2(self, data: list[int]) -> list[int]:
        assert self._chip is not None, "xfer2 on a closed SpiDev"
        return self._chip.xfer2(list(data))

    def close(self) -> None:
        if self._chip is not None:
            self._chip.open_handles -= 1
            self._chip = None


class SpidevModule(ModuleType):
    def __init__(self, chips: dict[tuple[int, int], EmulatedMFRC522]) -> None:
        super().__init__("spidev")
        self.chips = chips

    def SpiDev(self) -> SpiDev:  # noqa: N802 - spidev's name
        return SpiDev(self.chips)


class GPIOModule(ModuleType):
    """RPi.GPIO that records every call, so a test can see who touched it."""

    BOARD, BCM, OUT, IN, LOW, HIGH = 10, 11, 0, 1, 0, 1

    def __init__(self) -> None:
        super().__init__("RPi.GPIO")
        self.calls: list[tuple] = []
        self._mode: int | None = None

    def getmode(self) -> int | None:
        return self._mode

    def setmode(self, mode: int) -> None:
        self.calls.append(("setmode", mode))
        if self._mode not in (None, mode):
            raise ValueError("A different mode has already been set!")
        self._mode = mode

    def setup(self, channel: int, direction: int, **kwargs: object) -> None:
        self.calls.append(("setup", channel, direction))

    def output(self, channel: int, value: int) -> None:
        self.calls.append(("output", channel, value))

    def setwarnings(self, flag: bool) -> None:
        self.calls.append(("setwarnings", flag))

    def cleanup(self, *channels: int) -> None:
        self.calls.append(("cleanup", *channels))


@dataclass
class Doubles:
    spidev: SpidevModule
    gpio: GPIOModule


@contextmanager
def installed(chips: dict[tuple[int, int], EmulatedMFRC522]) -> Iterator[Doubles]:
    """Put the doubles in sys.modules (the driver is imported afresh against
    them) and take them, and the driver, out again afterwards."""
    gpio = GPIOModule()
    rpi = ModuleType("RPi")
    rpi.GPIO = gpio  # type: ignore[attr-defined]
    doubles = {"spidev": SpidevModule(chips), "RPi": rpi, "RPi.GPIO": gpio}

    def driver_modules() -> list[str]:
        return [name for name in sys.modules if name == "mfrc522" or name.startswith("mfrc522.")]

    saved = {name: sys.modules[name] for name in [*doubles, *driver_modules()] if name in sys.modules}
    for name in driver_modules():
        del sys.modules[name]
    sys.modules.update(doubles)
    try:
        yield Doubles(doubles["spidev"], gpio)  # type: ignore[arg-type]
    finally:
        for name in [*doubles, *driver_modules()]:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
