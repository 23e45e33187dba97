"""The agent's HeadReader against a head speaking headproto over a pseudo-terminal,
and property tests of the protocol's decoder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ReaderConfig
from agent.core.model import Signal
from agent.hardware import headproto
from agent.hardware.factory import make_reader
from agent.hardware.head import HeadReader
from tests.support.helpers import wait_for
from tests.support.serialdevice import SerialDevice

CARD_A = "04A1B2C3D4E5F6"
CARD_B = "DEADBEEF"


class FakeHead:
    """The head's side in a thread: hello, a heartbeat every 0.1 s while `beating`,
    and every message the agent sends kept in `received`."""

    def __init__(self, device: SerialDevice) -> None:
        self.device = device
        self.decoder = headproto.Decoder()
        self.received: list[tuple[str, list[str]]] = []
        self.beating = threading.Event()
        self.beating.set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-head")

    def __enter__(self) -> FakeHead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def send(self, kind: str, *fields: object) -> None:
        self.write(headproto.encode(kind, *fields))

    def write(self, data: bytes) -> None:
        with self._lock:
            self.device.write(data)

    def shown(self) -> list[str]:
        return [fields[0] for kind, fields in self.received if kind == headproto.SHOW]

    def _run(self) -> None:
        # As the firmware does: hello at boot, and again when the agent is first heard
        # (an agent that opened its port after our first hello never saw it).
        self.send(headproto.HELLO, "test-0.1", headproto.PROTOCOL)
        next_beat = 0.0
        while not self._stop.is_set():
            if self.beating.is_set() and time.monotonic() >= next_beat:
                self.send(headproto.BEAT, 0, 0)
                next_beat = time.monotonic() + 0.1
            messages = self.decoder.feed(self.device.read(timeout=0.02))
            if messages and not self.received:
                self.send(headproto.HELLO, "test-0.1", headproto.PROTOCOL)
            self.received.extend(messages)


class Recorder:
    def __init__(self) -> None:
        self.taps: list[str] = []

    def tap(self, badge: str) -> None:
        self.taps.append(badge)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[SerialDevice]:
    dev = SerialDevice(tmp_path / "ttyHEAD")
    yield dev
    dev.close()


@pytest.fixture
def agent(device: SerialDevice) -> Iterator[tuple[HeadReader, Recorder]]:
    reader = HeadReader(ReaderConfig(type="head", port=str(device.path), rearm=1.0), silence=0.5)
    seen = Recorder()
    reader.start(seen.tap)
    yield reader, seen
    reader.close()


def test_head_card_held_is_one_tap(device: SerialDevice, agent: tuple[HeadReader, Recorder]) -> None:
    reader, seen = agent
    with FakeHead(device) as head:
        wait_for(lambda: reader.firmware == "test-0.1", 5, "the head's hello")
        for _ in range(10):  # the head reports every read of a held card
            head.send(headproto.CARD, CARD_A.lower())
        head.send(headproto.CARD, CARD_B)
        wait_for(lambda: CARD_B in seen.taps, 5, "card B's tap")
        assert seen.taps == [CARD_A, CARD_B]


def test_head_indicate_reaches_the_head(device: SerialDevice, agent: tuple[HeadReader, Recorder]) -> None:
    reader, _ = agent
    with FakeHead(device) as head:
        wait_for(lambda: reader.healthy, 5, "the head to be heard")
        reader.indicate(Signal.GRANTED)
        wait_for(lambda: "granted" in head.shown(), 5, "the head to be told 'granted'")
        wait_for(lambda: any(kind == headproto.BEAT for kind, _ in head.received), 5, "the agent's heartbeat")
        assert head.decoder.total_dropped() == 0


def test_head_unhealthy_when_heartbeats_stop_healthy_when_they_resume(
    device: SerialDevice, agent: tuple[HeadReader, Recorder]
) -> None:
    reader, _ = agent
    with FakeHead(device) as head:
        wait_for(lambda: reader.healthy, 5, "the head to be heard")
        head.beating.clear()
        wait_for(lambda: not reader.healthy, 5, "the head to be missed")
        assert "no heartbeat" in reader.detail
        head.beating.set()
        wait_for(lambda: reader.healthy, 5, "the head to be heard again")


def test_head_drops_garbage_bad_checksums_and_unknown_types(
    device: SerialDevice, agent: tuple[HeadReader, Recorder]
) -> None:
    reader, seen = agent
    with FakeHead(device) as head:
        wait_for(lambda: reader.healthy, 5, "the head to be heard")
        good = headproto.encode(headproto.CARD, CARD_A)
        head.write(b"\x00\xffnoise\n")
        head.write(good.replace(b"04A1", b"04A2"))  # the checksum no longer matches
        head.write(headproto.encode("FROB", "x"))  # a type this agent does not know
        head.write(headproto.encode(headproto.CARD, "NOTHEX"))
        head.write(b"x" * 500 + b"\n")
        head.write(good)
        wait_for(lambda: seen.taps, 5, "the valid card's tap")
        assert seen.taps == [CARD_A]
        assert reader.dropped == {"garbage": 1, "checksum": 1, "unknown": 1, "overlong": 1, "bad_uid": 1}
        assert reader.healthy


def test_head_restart_is_shown_the_current_state(
    device: SerialDevice, agent: tuple[HeadReader, Recorder]
) -> None:
    reader, _ = agent
    with FakeHead(device) as head:
        wait_for(lambda: reader.healthy, 5, "the head to be heard")
        reader.indicate(Signal.WARNING)
        reader.indicate(Signal.REFUSED)  # plays once; the head returns to the warning
        wait_for(lambda: "refused" in head.shown(), 5, "both signals")
        assert head.shown().index("warning") < head.shown().index("refused")
        before = len(head.shown())
        head.send(headproto.HELLO, "test-0.2", headproto.PROTOCOL)  # the head rebooted
        wait_for(lambda: "warning" in head.shown()[before:], 5, "the steady signal again")
        assert "refused" not in head.shown()[before:], "a one-off signal is not replayed"
        wait_for(lambda: reader.firmware == "test-0.2", 5, "the new hello")


def test_head_survives_unplug_and_replug(device: SerialDevice, agent: tuple[HeadReader, Recorder]) -> None:
    reader, seen = agent
    with FakeHead(device):
        wait_for(lambda: reader.healthy, 5, "the head to be heard")
    device.unplug()
    wait_for(lambda: not reader.healthy, 5, "the unplug to be noticed")
    device.plug()
    with FakeHead(device) as head:
        wait_for(lambda: reader.healthy, 10, "the head to be heard after the replug")
        head.send(headproto.CARD, CARD_B)
        wait_for(lambda: seen.taps == [CARD_B], 5, "a tap after the replug")
        assert reader.healthy and reader.detail is None


def test_head_is_made_by_the_factory(tmp_path: Path) -> None:
    with make_reader(ReaderConfig(type="head", port=str(tmp_path / "ttyACM9")), simulate=False) as reader:
        assert isinstance(reader, HeadReader) and reader.silence == headproto.SILENCE_S


# -- the protocol ---------------------------------------------------------------------


def test_headproto_crc_is_ccitt_false() -> None:
    assert headproto.crc16(b"123456789") == 0x29B1  # the standard check value


field = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="*"), min_size=1, max_size=10)
kinds = st.sampled_from([*headproto.FIELDS, "FROB"])


@given(kinds, st.lists(field, min_size=2, max_size=4))
def test_headproto_round_trips(kind: str, fields: list[str]) -> None:
    decoder = headproto.Decoder()
    messages = decoder.feed(headproto.encode(kind, *fields))
    assert messages == ([(kind, fields)] if kind in headproto.FIELDS else [])


def lines_near_the_protocol() -> st.SearchStrategy[bytes]:
    valid = st.builds(lambda k, f: headproto.encode(k, *f), kinds, st.lists(field, max_size=3))
    return st.lists(st.one_of(valid, st.binary(max_size=30), st.sampled_from([b"\n", b"\r\n", b" *"])),
                    max_size=12).map(b"".join)


@given(st.one_of(st.binary(max_size=300), lines_near_the_protocol()), st.lists(st.integers(0, 300), max_size=4))
def test_headproto_decodes_only_lines_that_were_sent(data: bytes, cuts: list[int]) -> None:
    decoder = headproto.Decoder()
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    for start, end in zip(bounds, bounds[1:]):
        for kind, fields in decoder.feed(data[start:end]):
            line = headproto.encode(kind, *fields)
            assert line in data or line[:-1] + b"\r\n" in data


@given(st.binary(max_size=200), st.sampled_from([CARD_A, CARD_B]), st.binary(max_size=200))
def test_headproto_finds_a_line_after_noise(before: bytes, uid: str, after: bytes) -> None:
    data = before + b"\n" + headproto.encode(headproto.CARD, uid) + after
    assert (headproto.CARD, [uid]) in headproto.Decoder().feed(data)
