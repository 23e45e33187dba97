"""The RDM6300 backend on a pseudo-terminal (and a TCP serial URL), and its frame parser."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ReaderConfig
from agent.hardware.factory import make_reader
from agent.hardware.rdm6300 import FrameParser, RDM6300Reader
from tests.support.helpers import wait_for
from tests.support.serialdevice import SerialDevice


def frame(tag: bytes, checksum: int | None = None) -> bytes:
    """A frame as an RDM6300 sends it; `checksum` overrides the right one."""
    if checksum is None:
        checksum = 0
        for byte in tag:
            checksum ^= byte
    return b"\x02" + tag.hex().upper().encode() + b"%02X" % checksum + b"\x03"


CARD_A = bytes.fromhex("0A1B2C3D4E")
CARD_B = bytes.fromhex("1100FF2233")


class Recorder:
    def __init__(self) -> None:
        self.taps: list[str] = []
        self.health: list[tuple[bool, str | None]] = []

    def tap(self, badge: str) -> None:
        self.taps.append(badge)

    def health_changed(self, ok: bool, detail: str | None) -> None:
        self.health.append((ok, detail))


@pytest.fixture
def device(tmp_path: Path) -> Iterator[SerialDevice]:
    dev = SerialDevice(tmp_path / "ttyRDM")
    yield dev
    dev.close()


def start_reader(port: str, rearm: float = 1.0, on_tap=None) -> tuple[RDM6300Reader, Recorder]:
    reader = RDM6300Reader(ReaderConfig(type="rdm6300", port=port, rearm=rearm))
    seen = Recorder()
    reader.start(on_tap or seen.tap, seen.health_changed)
    wait_for(lambda: seen.health and seen.health[-1][0], 5, "the reader to open its port")
    return reader, seen


def test_rdm6300_reads_a_valid_frame(device: SerialDevice) -> None:
    reader, seen = start_reader(str(device.path))
    with reader:
        device.write(frame(CARD_A))
        wait_for(lambda: seen.taps, 5, "a tap")
        assert seen.taps == ["0A1B2C3D4E"]


def test_rdm6300_drops_corrupt_frames_and_noise(device: SerialDevice) -> None:
    reader, seen = start_reader(str(device.path))
    with reader:
        good_b = frame(CARD_B)
        device.write(
            frame(CARD_A, checksum=0x00)  # bad checksum
            + b"\xff\x00junk\r\n"  # line noise between frames
            + frame(CARD_A)[:7]  # a partial frame, cut by the next STX
            + good_b[:5]
            + good_b[5:]
        )
        wait_for(lambda: seen.taps, 5, "the valid frame's tap")
        assert seen.taps == ["1100FF2233"]
        assert reader.dropped == 2


def test_rdm6300_card_held_is_one_tap(device: SerialDevice) -> None:
    reader, seen = start_reader(str(device.path), rearm=1.0)
    with reader:
        for _ in range(15):  # a card held: a frame every ~20 ms, well inside rearm
            device.write(frame(CARD_A))
            time.sleep(0.02)
        device.write(frame(CARD_B))  # ordered after all of A's frames: once seen, A's are done
        wait_for(lambda: "1100FF2233" in seen.taps, 5, "card B's tap")
        assert seen.taps == ["0A1B2C3D4E", "1100FF2233"]


def test_rdm6300_a_held_tag_with_garbled_frames_is_one_tap() -> None:
    # Noise spoils the frames of a tag held on the antenna for longer than rearm:
    # a garbled frame still says a tag is there, so the next good one is no new tap.
    reader = RDM6300Reader(ReaderConfig(type="rdm6300", port="unused", rearm=0.5))
    seen = Recorder()
    reader._on_tap = seen.tap  # frames are fed by hand, with their times: no port, no thread
    reader._received(frame(CARD_A), 0.0)
    for now in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        reader._received(frame(CARD_A, checksum=0x00), now)
    reader._received(frame(CARD_A), 0.8)
    assert seen.taps == ["0A1B2C3D4E"]
    reader._received(frame(CARD_A), 1.4)  # then 0.6 s of silence: a new presentation
    assert seen.taps == ["0A1B2C3D4E"] * 2


def test_rdm6300_taps_again_after_rearm(device: SerialDevice) -> None:
    reader, seen = start_reader(str(device.path), rearm=0.2)
    with reader:
        device.write(frame(CARD_A))
        wait_for(lambda: len(seen.taps) == 1, 5, "the first tap")
        removed = time.monotonic()
        wait_for(lambda: time.monotonic() - removed > 0.3, 5, "the card to be away longer than rearm")
        device.write(frame(CARD_A))
        wait_for(lambda: len(seen.taps) == 2, 5, "the second tap")
        assert seen.taps == ["0A1B2C3D4E", "0A1B2C3D4E"]


def test_rdm6300_survives_unplug_and_replug(device: SerialDevice) -> None:
    reader, seen = start_reader(str(device.path))
    with reader:
        device.unplug()
        wait_for(lambda: not reader.healthy, 5, "the reader to notice the unplug")
        assert str(device.path) in (reader.detail or "")
        device.plug()
        wait_for(lambda: reader.healthy, 10, "the reader to reopen the device")
        device.write(frame(CARD_A))
        wait_for(lambda: seen.taps, 5, "a tap after the replug")
        assert seen.taps == ["0A1B2C3D4E"]
        oks = [ok for ok, _ in seen.health]
        assert [ok for i, ok in enumerate(oks) if i == 0 or ok != oks[i - 1]] == [True, False, True]


def test_rdm6300_reports_a_missing_device_and_closes_promptly(tmp_path: Path) -> None:
    reader = RDM6300Reader(ReaderConfig(type="rdm6300", port=str(tmp_path / "nothing"), rearm=0.5))
    seen = Recorder()
    reader.start(seen.tap, seen.health_changed)
    try:
        wait_for(lambda: seen.health, 5, "a health report")
        assert seen.health[0][0] is False and "cannot open" in seen.health[0][1]
    finally:
        started = time.monotonic()
        reader.close()
    assert time.monotonic() - started < 1.0
    assert not reader._thread.is_alive()


def test_rdm6300_a_port_that_opens_then_fails_is_reopened_after_a_growing_back_off() -> None:
    """A serial server that accepts and hangs up at once (a half-dead adapter): the port
    opens, its first read fails. Reopened at once, for ever, the reader spun a core."""
    accepted: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.1)
        stop = threading.Event()

        def hang_up() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                accepted.append(time.monotonic())
                conn.close()

        acceptor = threading.Thread(target=hang_up)
        acceptor.start()
        host, port = server.getsockname()
        try:
            reader = RDM6300Reader(ReaderConfig(type="rdm6300", port=f"socket://{host}:{port}", rearm=1.0))
            seen = Recorder()
            reader.start(seen.tap, seen.health_changed)
            with reader:
                wait_for(lambda: len(accepted) >= 4, 10, "the reader to reopen the port three times")
            assert all(not ok for ok, _ in seen.health), "never healthy: no read ever succeeded"
        finally:
            stop.set()
            acceptor.join(5)
    gaps = [b - a for a, b in zip(accepted, accepted[1:])]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3 and gaps[2] >= 0.6, f"reopened after {gaps} s"


def test_rdm6300_reads_through_a_pyserial_url() -> None:
    """`port` may be a pyserial URL: here a reader behind a TCP serial server (ser2net)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        accepted: list[socket.socket] = []
        acceptor = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        acceptor.start()
        host, port = server.getsockname()
        reader, seen = start_reader(f"socket://{host}:{port}")
        with reader:
            acceptor.join(5)
            with accepted[0] as conn:
                conn.sendall(frame(CARD_B))
                wait_for(lambda: seen.taps, 5, "a tap over TCP")
        assert seen.taps == ["1100FF2233"]


def test_rdm6300_survives_a_failing_tap_handler(device: SerialDevice) -> None:
    taps: list[str] = []

    def handler(badge: str) -> None:
        taps.append(badge)
        if len(taps) == 1:
            raise RuntimeError("the agent had a bad moment")

    reader, _ = start_reader(str(device.path), on_tap=handler)
    with reader:
        device.write(frame(CARD_A))
        wait_for(lambda: taps, 5, "the first tap")
        device.write(frame(CARD_B))
        wait_for(lambda: len(taps) == 2, 5, "the next tap, after the handler failed")
        assert taps == ["0A1B2C3D4E", "1100FF2233"] and reader.healthy


def test_rdm6300_is_made_by_the_factory(tmp_path: Path) -> None:
    config = ReaderConfig(type="rdm6300", port=str(tmp_path / "ttyX"), baudrate=9600)
    with make_reader(config, simulate=False) as reader:
        assert isinstance(reader, RDM6300Reader) and reader.port == config.port


# -- the frame parser ---------------------------------------------------------------

VALID_FRAME = re.compile(rb"\x02([0-9A-Fa-f]{12})\x03")


def framed_badges(data: bytes) -> list[str]:
    """What a correct parser must find: every STX + 12 hex + ETX whose checksum holds."""
    found = []
    for match in VALID_FRAME.finditer(data):
        raw = bytes.fromhex(match.group(1).decode())
        if raw[0] ^ raw[1] ^ raw[2] ^ raw[3] ^ raw[4] == raw[5]:
            found.append(raw[:5].hex().upper())
    return found


noise = st.binary(max_size=200)
# Bytes near the protocol's alphabet, so that frames and near-frames actually occur.
frameish = st.lists(
    st.one_of(st.sampled_from([b"\x02", b"\x03"]), st.text("0123456789ABCDEFabcdefX", max_size=14).map(str.encode)),
    max_size=30,
).map(b"".join)


@given(st.one_of(noise, frameish), st.lists(st.integers(0, 200), max_size=5))
def test_rdm6300_parser_finds_exactly_the_framed_badges(data: bytes, cuts: list[int]) -> None:
    parser = FrameParser()
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    badges = [b for start, end in zip(bounds, bounds[1:]) for b in parser.feed(data[start:end])]
    assert badges == framed_badges(data)


@given(noise, st.binary(min_size=5, max_size=5), noise)
def test_rdm6300_parser_finds_a_frame_in_noise(before: bytes, tag: bytes, after: bytes) -> None:
    assert tag.hex().upper() in FrameParser().feed(before + frame(tag) + after)
