"""The reader-head firmware under CPython: the ISO 14443 A cascade against a card
model, the LED patterns, the head's loop, the head against the agent over a pty,
and the boot-config fragment."""

from __future__ import annotations

import ast
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import ReaderConfig
from agent.core.model import Signal
from agent.hardware import headproto
from agent.hardware.head import HeadReader
from tests.support import ROOT
from tests.support.helpers import wait_for
from tests.support.serialdevice import SerialDevice

PICO = ROOT / "firmware" / "pico"
sys.path.insert(0, str(PICO))

import headloop  # noqa: E402
import iso14443a  # noqa: E402
from indicator import Indicator, pattern  # noqa: E402

# -- ISO 14443 A --------------------------------------------------------------------


class Card:
    """An ISO 14443-3 type A card, as far as a UID read goes: states idle, ready
    (at a cascade level), active and halt; `corrupt_bcc` spoils its anticollision answers."""

    def __init__(self, uid: bytes, corrupt_bcc: bool = False) -> None:
        self.uid = uid
        self.corrupt_bcc = corrupt_bcc
        self.in_field = True
        self.state = "idle"
        self.level = 0
        parts = {4: [uid], 7: [b"\x88" + uid[:3], uid[3:]], 10: [b"\x88" + uid[:3], b"\x88" + uid[3:6], uid[6:]]}
        self.levels = parts[len(uid)]

    def transceive(self, data: bytes, tx_bits: int) -> bytes | None:
        if not self.in_field:
            return None
        if data == b"\x52" and tx_bits == 7 and self.state in ("idle", "halt"):
            self.state, self.level = "ready", 0
            return b"\x04\x00" if len(self.uid) == 4 else b"\x44\x00"
        if self.state == "ready" and data == bytes((iso14443a.SELECT[self.level], 0x20)):
            part = self.levels[self.level]
            bcc = part[0] ^ part[1] ^ part[2] ^ part[3] ^ (1 if self.corrupt_bcc else 0)
            return part + bytes((bcc,))
        if self.state == "ready" and len(data) == 9 and data[:2] == bytes((iso14443a.SELECT[self.level], 0x70)):
            assert iso14443a.crc_a(data[:7]) == data[7:], "SELECT without a valid CRC_A"
            assert data[2:6] == self.levels[self.level]
            complete = self.level == len(self.levels) - 1
            sak = b"\x08" if complete else b"\x04"
            self.level += 0 if complete else 1
            self.state = "active" if complete else "ready"
            return sak + iso14443a.crc_a(sak)
        if data[:2] == b"\x50\x00" and self.state == "active":
            assert iso14443a.crc_a(data[:2]) == data[2:]
            self.state = "halt"
            return None
        self.state = "idle"  # anything unexpected: the card drops back
        return None


def test_firmware_crc_a_check_values() -> None:
    # ISO/IEC 14443-3 annex B examples
    assert iso14443a.crc_a(b"\x00\x00") == b"\xa0\x1e"
    assert iso14443a.crc_a(b"\x12\x34") == b"\x26\xcf"


@pytest.mark.parametrize("uid", ["04A1B2C3", "04A1B2C3D4E5F6", "04A1B2C3D4E5F6071829"])
def test_firmware_reads_uids_through_every_cascade_level(uid: str) -> None:
    card = Card(bytes.fromhex(uid))
    assert iso14443a.read_uid(card.transceive) == bytes.fromhex(uid)
    assert card.state == "halt"
    assert iso14443a.read_uid(card.transceive) == bytes.fromhex(uid)  # a held card is read at every poll


def test_firmware_reads_nothing_without_a_card_or_with_a_bad_bcc() -> None:
    card = Card(bytes.fromhex("04A1B2C3D4E5F6"))
    card.in_field = False
    assert iso14443a.read_uid(card.transceive) is None
    assert iso14443a.read_uid(Card(bytes.fromhex("04A1B2C3D4E5F6"), corrupt_bcc=True).transceive) is None


# -- LEDs and buzzer -----------------------------------------------------------------


def test_firmware_indicator_plays_refused_then_returns_to_steady() -> None:
    ind = Indicator()
    ind.show("granted", 1000)
    assert ind.outputs(1010, True)[:3] == (True, False, False)
    assert ind.outputs(1010, True)[3] and not ind.outputs(1500, True)[3]  # one short beep
    ind.show("refused", 2000)
    assert ind.outputs(2010, True)[:3] == (False, True, False)
    assert ind.outputs(4000, True)[:3] == (True, False, False)  # granted again
    ind.show("ended", 5000)
    assert ind.outputs(5010, True)[:3] == (False, False, True)
    assert ind.outputs(7000, True)[1:] == (False, False, False)  # idle
    assert ind.outputs(7000, False)[1] or ind.outputs(7500, False)[1]  # no agent: red blinks


def test_firmware_indicator_plays_the_signals_at_the_machine_over_the_steady_state() -> None:
    ind = Indicator()
    ind.show("granted", 0)  # a trainer's session
    ind.show("inducted", 1000)
    assert ind.outputs(1010, True) == (True, False, True, True)  # green and amber, a beep
    assert ind.outputs(3100, True)[:3] == (True, False, False)  # the training goes on: granted again
    ind.show("enrolled", 4000)
    greens = [ind.outputs(4000 + ms, True)[0] for ms in range(0, 1800, 100)]
    assert greens.count(True) == 9 and greens[:6] == [True, True, True, False, False, False]  # three blinks
    ind.show("out_of_order", 6000)
    assert ind.outputs(6010, True) == (False, True, False, True)
    assert ind.outputs(9500, True)[1:] == (False, False, False)  # idle after it: the session ended


def test_firmware_knows_every_signal_the_agent_sends() -> None:
    assert set(headproto.SIGNALS) == {s.value for s in Signal}
    shown = {s: tuple(pattern(s, ms) for ms in (0, 200, 450, 700)) for s in headproto.SIGNALS}
    assert len(set(shown.values())) == len(shown), "two signals look and sound the same on the head"


# -- the head's loop ------------------------------------------------------------------


class Board:
    """The head's I/O for Head.step: a card that can be presented, lines written, outputs shown."""

    def __init__(self) -> None:
        self.card: bytes | None = None
        self.decoder = headproto.Decoder()
        self.sent: list[tuple[str, list[str]]] = []
        self.outputs: tuple[bool, bool, bool, bool] | None = None

    def read_uid(self) -> bytes | None:
        return self.card

    def write(self, line: bytes) -> None:
        self.sent.extend(self.decoder.feed(line))

    def show(self, *outputs: bool) -> None:
        self.outputs = outputs


def test_firmware_head_says_hello_beats_and_reports_every_read() -> None:
    board = Board()
    head = headloop.Head(board.read_uid, board.write, board.show)
    head.step(0, b"")
    assert board.sent[0] == (headproto.HELLO, [headloop.FIRMWARE_VERSION, str(headproto.PROTOCOL)])
    board.card = bytes.fromhex("04a1b2c3d4e5f6")
    for now in range(10, 1010, 10):
        head.step(now, b"garbage\n" if now == 500 else b"")
    cards = [fields for kind, fields in board.sent if kind == headproto.CARD]
    beats = [fields for kind, fields in board.sent if kind == headproto.BEAT]
    assert cards == [["04A1B2C3D4E5F6"]] * 10  # every poll, 100 ms apart: the agent debounces
    assert beats == [["0", "0"], ["1", "1"]]  # the second counts the garbage line


def test_firmware_head_says_hello_again_when_the_agent_returns() -> None:
    """An agent that opens its port after the head booted missed the first hello."""
    board = Board()
    head = headloop.Head(board.read_uid, board.write, board.show)
    head.step(0, b"")
    head.step(10, headproto.encode(headproto.BEAT, 0, 0))  # the agent, heard for the first time
    head.step(20, headproto.encode(headproto.BEAT, 0, 0))  # still there: no new hello
    head.step(9000, headproto.encode(headproto.BEAT, 9, 0))  # back after a silence
    assert [kind for kind, _ in board.sent if kind == headproto.HELLO] == [headproto.HELLO] * 3


def test_firmware_head_shows_signals_and_offline_without_the_agent() -> None:
    board = Board()
    head = headloop.Head(board.read_uid, board.write, board.show)
    head.step(0, b"")
    assert not head.agent_alive(0)
    head.step(10, headproto.encode(headproto.SHOW, "granted"))
    assert board.outputs[:3] == (True, False, False)
    head.step(3000, headproto.encode(headproto.BEAT, 3, 0))
    assert head.agent_alive(3000) and board.outputs[0]
    head.step(6500, b"")  # 3.5 s without a word from the agent
    assert not head.agent_alive(6500) and board.outputs[:3] == (False, False, False)
    head.step(7000, b"")
    assert board.outputs[:3] == (False, True, False)  # red blinking


# -- the firmware's loop against the agent, over a pseudo-terminal -------------------


class PtyHead:
    """headloop.Head in a thread on the pty's master end, as main.py runs it on the board."""

    def __init__(self, device: SerialDevice) -> None:
        self.device = device
        self.card: bytes | None = None
        self.head = headloop.Head(lambda: self.card, device.write, lambda *outputs: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pico-head")

    def __enter__(self) -> PtyHead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            incoming = self.device.read(timeout=0.01)
            self.head.step(int((time.monotonic() - start) * 1000), incoming)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[SerialDevice]:
    dev = SerialDevice(tmp_path / "ttyACM0")
    yield dev
    dev.close()


def test_firmware_head_and_agent_work_together(device: SerialDevice) -> None:
    taps: list[str] = []
    reader = HeadReader(ReaderConfig(type="head", port=str(device.path), rearm=0.5))
    reader.start(taps.append)
    with reader, PtyHead(device) as pico:
        wait_for(lambda: reader.healthy and reader.firmware == headloop.FIRMWARE_VERSION, 5, "the head's hello")
        pico.card = bytes.fromhex("04A1B2C3D4E5F6")
        wait_for(lambda: taps, 5, "the card's tap")
        reader.indicate(Signal.GRANTED)
        wait_for(lambda: pico.head.indicator.steady == "granted", 5, "the head to show granted")
        pico.card = None
        assert taps == ["04A1B2C3D4E5F6"]


# -- what MicroPython can run ------------------------------------------------------------

ON_THE_BOARD = [ROOT / "agent" / "hardware" / "headproto.py", *sorted(PICO.glob("*.py"))]
BOARD_MODULES = {"headproto", "headloop", "indicator", "iso14443a", "rc522", "machine", "select", "sys", "time"}
# Methods MicroPython's built-in types lack, that CPython code reaches for.
MISSING_METHODS = {"hex", "fromhex", "isascii", "removeprefix", "removesuffix", "casefold", "format_map"}


@pytest.mark.parametrize("path", ON_THE_BOARD, ids=lambda p: p.name)
def test_firmware_code_stays_within_micropython(path: Path) -> None:
    """A guard, not a proof: the constructs that most often break a file on the board."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        assert not isinstance(node, ast.JoinedStr), f"{where}: f-string"
        assert not isinstance(node, ast.AnnAssign), f"{where}: variable annotation"
        assert not (isinstance(node, ast.Attribute) and node.attr in MISSING_METHODS), f"{where}: .{node.attr}"
        if isinstance(node, ast.ImportFrom) and node.module == "agent.hardware":
            continue  # headloop's CPython fallback, reached only when `headproto` is missing
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert set(names) <= BOARD_MODULES, f"{where}: imports {names}"
    if path.name == "headproto.py":
        assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)), "headproto imports"


def test_firmware_main_imports_without_a_board() -> None:
    spec = importlib.util.spec_from_file_location("pico_main", PICO / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)


def test_firmware_boot_config_holds_the_relay_off() -> None:
    lines = [line.strip() for line in (ROOT / "firmware" / "config.txt").read_text().splitlines()]
    active = [line for line in lines if line and not line.startswith("#")]
    assert [line for line in active if line.startswith("gpio=17=")] == ["gpio=17=op,dh"]  # active-low default
    assert "#gpio=17=op,dl" in lines
    for needed in ("dtparam=spi=on", "dtparam=watchdog=on", "enable_uart=1"):
        assert needed in active
