"""Tap to relay: a badge read by the reader backend to the relay pin changing.

The agent runs in-process on gpiozero's mock pins with the simulated reader,
its storage on a RAM filesystem. `SimulatedReader.present` is the real reader
path (it submits the tap to the agent's loop); the clock stops when the relay
pin's state changes, timed inside the pin itself, so the benchmark thread's own
wake-up is not counted. Taps alternate on/off for one member after another, so
every tap changes the relay: the "on" half includes the durable outbox write.

`lookup_during_apply` times the same taps while a large member list is being
applied as one from the broker is: from another thread, as the MQTT list
worker calls `Agent.receive_list`, which writes it in a child process.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.devtools.bench.common import (
    badges_of,
    fs_type,
    load_config,
    member_list,
    percentile,
    ram_dir,
)

if TYPE_CHECKING:
    from gpiozero import Factory

    from agent.hardware.reader import Reader


class TimedAgent:
    """An Agent on mock pins in a thread, its relay pin hooked to time every change.

    Its reader is the simulated one, or what `make_reader(pins)` builds; its config
    the bench's machine (`load_config`), with `reader` keys added to [reader].
    """

    def __init__(self, storage: Path, make_reader: Callable[[Factory], Reader] | None = None,
                 reader: dict[str, object] | None = None) -> None:
        from gpiozero.pins.mock import MockFactory

        from agent.daemon.agent import Agent
        from agent.hardware.simulated import SimulatedReader

        self.config = load_config(storage, reader=reader)
        self.pins = MockFactory()
        self.reader = make_reader(self.pins) if make_reader else SimulatedReader()
        self.agent = Agent(self.config, pins=self.pins, reader=self.reader)
        self.pin = self.pins.pin(self.config.relay.pin)
        self.changed = threading.Event()
        self.changed_at = 0.0
        original = self.pin._change_state

        def change_state(value: bool) -> bool:  # runs on the agent's loop thread
            did = original(value)
            if did:
                self.changed_at = time.perf_counter()
                self.changed.set()
            return did

        self.pin._change_state = change_state
        self.thread = threading.Thread(target=self.agent.run, name="bench-agent", daemon=True)

    def start(self) -> TimedAgent:
        self.thread.start()
        if not self.agent.started.wait(30):
            raise RuntimeError("the agent did not start")
        return self

    def tap(self, badge: str, timeout: float = 10.0) -> float:
        """Present `badge` to the simulated reader; seconds until the relay pin changed."""
        return self.time_change(lambda: self.reader.present(badge), badge, timeout)

    def time_change(self, act: Callable[[], None], what: str, timeout: float = 10.0) -> float:
        """Seconds from `act()` to the relay pin changing."""
        self.changed.clear()
        start = time.perf_counter()
        act()
        if not self.changed.wait(timeout):
            raise RuntimeError(f"{what} did not change the relay within {timeout} s (is the member inducted?)")
        return self.changed_at - start

    def settle(self) -> None:
        """Wait for the loop to finish its turn (the Tick after the tap)."""
        self.agent.call(lambda: None)
        self.agent.call(lambda: None)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.agent.stop()
            self.thread.join(15)
            if self.thread.is_alive():
                raise RuntimeError("the agent did not stop")

    def __enter__(self) -> TimedAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _apply(agent: Any, payload: bytes) -> dict[str, Any]:
    """As a list from the broker is applied: in a child process."""
    result = agent.receive_list(payload)
    if not result["applied"]:
        raise RuntimeError(f"the member list was not applied: {result['error']}")
    return result


def tap_to_relay(taps: int, members: int, seed: int = 1) -> dict[str, Any]:
    """`taps` taps (pairs of on and off) over a cache of `members` members."""
    rng = random.Random(seed)
    with ram_dir("tap") as storage, TimedAgent(storage) as timed:
        _apply(timed.agent, member_list(members))
        on, off = [], []
        for _ in range(max(1, taps // 2)):
            badge = badges_of(rng.randrange(members))[rng.randrange(2)]
            on.append(timed.tap(badge))
            timed.settle()
            off.append(timed.tap(badge))
            timed.settle()
        every = on + off
        return {
            "tap_to_relay_p50_ms": round(percentile(every, 50) * 1000, 4),
            "tap_to_relay_p99_ms": round(percentile(every, 99) * 1000, 4),
            "tap_to_relay_on_p99_ms": round(percentile(on, 99) * 1000, 4),
            "tap_to_relay_off_p99_ms": round(percentile(off, 99) * 1000, 4),
            "tap_to_relay_max_ms": round(max(every) * 1000, 4),
            "tap_to_relay_taps": len(every),
            "tap_to_relay_members": members,
            "tap_to_relay_fs": fs_type(storage),
        }


def lookup_during_apply(members: int, seed: int = 2) -> dict[str, Any]:
    """Taps answered (relay changed) while a `members`-member list replaces the cache."""
    rng = random.Random(seed)
    first, second = member_list(members, version=1), member_list(members, version=2)
    with ram_dir("apply-taps") as storage, TimedAgent(storage) as timed:
        _apply(timed.agent, first)
        done = threading.Event()
        failure: list[BaseException] = []

        def apply_second() -> None:
            try:
                _apply(timed.agent, second)
            except BaseException as err:  # reported below, on the benchmark's thread
                failure.append(err)
            finally:
                done.set()

        applier = threading.Thread(target=apply_second, name="bench-apply", daemon=True)
        times: list[float] = []
        applier.start()
        try:
            while not done.is_set():
                badge = badges_of(rng.randrange(members))[0]
                times.append(timed.tap(badge))
                if not done.is_set():
                    times.append(timed.tap(badge))
                else:  # leave the relay off for the next tap
                    timed.tap(badge)
        finally:
            applier.join(120)
        if failure:
            raise failure[0]
        return {
            "lookup_during_apply_p99_ms": round(percentile(times, 99) * 1000, 4),
            "lookup_during_apply_max_ms": round(max(times) * 1000, 4) if times else float("nan"),
            "lookup_during_apply_taps": len(times),
        }

