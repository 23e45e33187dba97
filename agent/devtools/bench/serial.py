"""A frame to the relay on the serial readers: the RDM6300 and the reader head,
their real backends on a pseudo-terminal, the agent in-process on mock pins.

A frame cannot be decoded before its last byte is in, so the figure is from
that byte to the relay pin changing (timed inside the pin): "a frame to the
relay within one frame time plus 5 ms" is this under 5 ms. RDM6300 frames are
written a byte at a time at 9600 baud's pace (14 bytes, 14.6 ms: the reader
sees them arrive as a real UART delivers them); a head's line arrives whole,
as a USB packet does. Presentations alternate on and off, away for longer than
`rearm` between them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.config import ReaderConfig
from agent.devtools.bench.common import percentile, ram_dir
from agent.devtools.bench.tap import TimedAgent, _apply
from agent.devtools.wait import wait_for

REARM = 0.1
BYTE_SECONDS = 10 / 9600  # 8N1 at 9600 baud


def rdm6300_frame(tag: bytes) -> bytes:
    checksum = 0
    for byte in tag:
        checksum ^= byte
    return b"\x02" + tag.hex().upper().encode() + b"%02X" % checksum + b"\x03"


def head_line(tag: bytes) -> bytes:
    from agent.hardware import headproto

    return headproto.encode(headproto.CARD, tag.hex().upper())


def _tags(count: int) -> list[bytes]:
    return [bytes.fromhex(f"{0x0A00000000 + i * 7919:010X}") for i in range(count)]


def _members(tags: list[bytes]) -> bytes:
    return json.dumps({"v": 1, "version": 1, "generated_at": "2026-11-25T09:00:00Z", "members": [
        {"id": f"m-{i:06d}", "name": f"Member {i}", "badges": [tag.hex().upper()], "status": "active",
         "expires": None, "roles": [], "inductions": {"laser": None}} for i, tag in enumerate(tags)]}).encode()


@contextlib.contextmanager
def _pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def _write_paced(fd: int, data: bytes, byte_seconds: float) -> None:
    """One byte at a time, at the line's pace (the schedule of a UART, not a wait)."""
    start = time.perf_counter()
    for i, byte in enumerate(data):
        time.sleep(max(0.0, start + i * byte_seconds - time.perf_counter()))
        os.write(fd, bytes([byte]))


def _frame_end_to_relay(kind: str, encode: Callable[[bytes], bytes], byte_seconds: float,
                        presentations: int, seed: int) -> list[float]:
    from agent.hardware.head import HeadReader
    from agent.hardware.rdm6300 import RDM6300Reader

    backend = {"rdm6300": RDM6300Reader, "head": HeadReader}[kind]
    rng = random.Random(seed)
    tags = _tags(100)
    with _pty() as (master, port), ram_dir(f"serial-{kind}") as storage, \
            TimedAgent(Path(storage), lambda pins: backend(ReaderConfig(type=kind, port=port, rearm=REARM),
                                                          pins)) as timed:
        _apply(timed.agent, _members(tags))
        wait_for(lambda: timed.reader._serial is not None, 10, f"the {kind} backend to open its port")
        times = []
        for _ in range(max(1, presentations // 2)):
            data = encode(rng.choice(tags))
            for _ in range(2):  # on, then off
                head, last = data[:-1], data[-1:]
                _write_paced(master, head, byte_seconds)
                time.sleep(byte_seconds)
                times.append(timed.time_change(lambda last=last: os.write(master, last), kind))
                time.sleep(REARM + 0.05)  # the schedule: away for longer than rearm
        return times


def serial_frames(presentations: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    worst = 0.0
    for kind, encode, pace in (("rdm6300", rdm6300_frame, BYTE_SECONDS), ("head", head_line, 0.0)):
        times = _frame_end_to_relay(kind, encode, pace, presentations, seed=4)
        p99 = percentile(times, 99) * 1000
        worst = max(worst, p99)
        figures[f"{kind}_frame_end_to_relay_p50_ms"] = round(percentile(times, 50) * 1000, 3)
        figures[f"{kind}_frame_end_to_relay_p99_ms"] = round(p99, 3)
    figures["serial_frame_end_to_relay_p99_ms"] = round(worst, 3)
    figures["serial_frames"] = presentations
    return figures
