"""Card on the reader to relay, for a UID card and for a secure card, and the reader's
cost while nothing is on it: the MFRC522 reader's real code path over the project's
emulated chip.

The agent runs in-process on mock pins (TimedAgent, storage on tmpfs) with the
MFRC522 backend as its reader, the unmodified `mfrc522` driver under it and
doubles for spidev and RPi.GPIO in place of the Pi's (as the tests run it).
The emulated chip keeps real time: every SPI transfer spends 30 us of CPU (the
cost of a spidev transfer on a Pi), frames take their time on the air, and a
card answers only 5 ms after it enters the field (ISO 14443-3's bound for a
card to accept a request). Each card is a member's 7-byte UID (NTAG, DESFire).

`card_to_relay`: a card is laid on the reader at a random moment among the
reader's looks; the clock runs from that moment to the relay pin changing
(timed inside the pin). It is taken off, and laid on again once `rearm` has
passed, so the presentations alternate on and off like the taps of
tap_to_relay. `card_to_relay_secure`: the same with `[reader] secure =
"ntag424"` (the lab's master key in a temporary file, mode 0600), each card
an emulated NTAG 424 DNA provisioned with its diversified key
(agent/devtools/emulated_ntag424.py, 2 ms of work per command): every tap, on
and off, is a whole secure check (RATS, ISOSelectFile, AuthenticateEV2First,
GetCardUID, S(DESELECT)) before the agent decides. `reader_idle`: the UID
agent with no card, over a window: the reader's looks at the empty field under
the 30 us model (transfers counted by the chip), and, measured here, the reader
thread's CPU (its transfers' 30 us included) and the whole process's.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from agent.config import ReaderConfig
from agent.devtools.bench.common import (
    badges_of,
    master_key_file,
    member_list,
    percentile,
    ram_dir,
)
from agent.devtools.bench.tap import TimedAgent, _apply
from agent.devtools.emulated_mfrc522 import (
    ISO_READY_AFTER,
    TRANSFER_SECONDS,
    Card,
    EmulatedMFRC522,
    RealTime,
    installed,
)
from agent.devtools.emulated_ntag424 import COMMAND_WORK, Ntag424
from agent.devtools.wait import wait_for

REARM = 0.1  # shorter than the default 0.5 s, so that presentations follow each other sooner
DRIVER = "mfrc522==0.0.7"


def require_driver() -> None:
    """The card figures run the real `mfrc522` driver (over the emulated chip); say how
    to get it before a run starts, rather than fail in the middle of one."""
    import importlib.util

    if importlib.util.find_spec("mfrc522") is None:
        raise RuntimeError(f"the card figures run the mfrc522 driver over an emulated chip: "
                           f"pip install --no-deps '{DRIVER}' (its Pi-only dependencies are not needed)")


KEY_NO = 2  # the card key a secure tap authenticates (the config's default)


@contextlib.contextmanager
def mfrc522_agent(members: int, secure: bool = False) -> Iterator[tuple[TimedAgent, EmulatedMFRC522, bytes | None]]:
    """A TimedAgent whose reader is the MFRC522 backend on an emulated chip in real time;
    with `secure`, secure cards on, and the lab's master key."""
    from agent.devtools.bench.common import load_config
    from agent.hardware.mfrc522 import MFRC522Reader

    chip = EmulatedMFRC522(clock=RealTime())
    with installed({(0, 0): chip}), ram_dir("card") as storage:
        keys: dict[str, object] = {"type": "mfrc522", "rearm": f"{REARM}s"}
        master = None
        if secure:
            key, master = master_key_file(storage)
            keys.update(secure="ntag424", card_key_file=str(key), card_key_no=KEY_NO)
        config = load_config(storage, reader=keys).reader
        with TimedAgent(storage, lambda pins: MFRC522Reader(config, pins), reader=keys) as timed:
            _apply(timed.agent, member_list(members))
            wait_for(lambda: timed.reader.healthy, 10, "the emulated MFRC522 to come up")
            yield timed, chip, master


def _thread_cpu(timed: TimedAgent) -> float:
    """Seconds of CPU the reader's thread has used."""
    thread = timed.reader._thread
    assert thread is not None and thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def reader_idle(timed: TimedAgent, chip: EmulatedMFRC522, seconds: float) -> dict[str, Any]:
    transfers, looks = chip.transfers, chip.requests
    thread, process, start = _thread_cpu(timed), time.process_time(), time.monotonic()
    time.sleep(seconds)  # the window: nothing happens, by design
    wall = time.monotonic() - start
    transfers, looks = chip.transfers - transfers, chip.requests - looks
    thread, process = _thread_cpu(timed) - thread, time.process_time() - process
    return {
        "reader_idle_cpu_percent": round(transfers * TRANSFER_SECONDS / wall * 100, 3),
        "reader_idle_thread_cpu_percent": round(thread / wall * 100, 3),
        "reader_idle_agent_cpu_percent": round(process / wall * 100, 3),
        "reader_idle_looks_per_s": round(looks / wall, 1),
        "reader_idle_transfers_per_look": round(transfers / max(1, looks), 2),
        "reader_idle_window_s": round(wall, 1),
    }


def _presentations(timed: TimedAgent, chip: EmulatedMFRC522, presentations: int, members: int,
                   make_card: Callable[[str], Card], seed: int) -> tuple[list[float], list[float]]:
    """Cards laid on the reader, on and off in turn: the seconds to the relay, for each half."""
    rng = random.Random(seed)
    poll = timed.reader.config.poll_interval
    on: list[float] = []
    off: list[float] = []
    for _ in range(max(1, presentations // 2)):
        uid = badges_of(rng.randrange(members))[0]
        for times in (on, off):
            time.sleep(rng.uniform(0, poll))  # a random moment among the reader's looks
            card = make_card(uid)
            times.append(timed.time_change(lambda card=card: chip.place(card), f"card {uid}"))
            chip.remove(card)
            time.sleep(REARM + 2 * poll)  # the schedule: away for longer than rearm
    return on, off


def _figures(name: str, on: list[float], off: list[float]) -> dict[str, Any]:
    every = on + off
    return {
        f"{name}_p50_ms": round(percentile(every, 50) * 1000, 3),
        f"{name}_p99_ms": round(percentile(every, 99) * 1000, 3),
        f"{name}_on_p99_ms": round(percentile(on, 99) * 1000, 3),
        f"{name}_off_p99_ms": round(percentile(off, 99) * 1000, 3),
        f"{name}_max_ms": round(max(every) * 1000, 3),
        f"{name}_cards": len(every),
    }


def _model(timed: TimedAgent) -> str:
    return (f"7-byte UID, answers {ISO_READY_AFTER * 1000:g} ms after entering the field, "
            f"{TRANSFER_SECONDS * 1e6:g} us per SPI transfer, looks every "
            f"{timed.reader.config.poll_interval * 1000:g} ms")


def card_to_relay(timed: TimedAgent, chip: EmulatedMFRC522, presentations: int, members: int,
                  seed: int = 3) -> dict[str, Any]:
    on, off = _presentations(timed, chip, presentations, members,
                             lambda uid: Card(uid, ready_after=ISO_READY_AFTER), seed)
    return {**_figures("card_to_relay", on, off), "card_to_relay_model": _model(timed)}


def secure_card_to_relay(presentations: int, members: int, seed: int = 4) -> dict[str, Any]:
    """`card_to_relay` with secure cards: each tap a whole NTAG 424 DNA check. A card that
    failed it would be refused and leave the relay alone: the run would stop there."""
    from agent.hardware.cardkeys import diversify

    with mfrc522_agent(members, secure=True) as (timed, chip, master):
        assert master is not None
        time.sleep(0.5)  # let the start-up and the list settle

        def lab_card(uid: str) -> Card:
            return Ntag424(uid, {KEY_NO: diversify(master, bytes.fromhex(uid))}, ready_after=ISO_READY_AFTER)

        on, off = _presentations(timed, chip, presentations, members, lab_card, seed)
        return {**_figures("card_to_relay_secure", on, off),
                "card_to_relay_secure_model": f"NTAG 424 DNA, {COMMAND_WORK * 1000:g} ms of work per command, "
                                              + _model(timed)}


@contextlib.contextmanager
def _emulated_reader(poll_interval: float) -> Iterator[tuple[Any, EmulatedMFRC522]]:
    """The MFRC522 backend on a chip in emulated time (deterministic), stepped by hand."""
    from gpiozero.pins.mock import MockFactory

    from agent.hardware.mfrc522 import MFRC522Reader

    chip = EmulatedMFRC522()
    pins = MockFactory()
    with installed({(0, 0): chip}):
        config = ReaderConfig(type="mfrc522", poll_interval=poll_interval)
        reader = MFRC522Reader(config, pins, sleep=chip.sleep, clock=chip.monotonic)
        try:
            yield reader, chip
        finally:
            reader.close()
            pins.close()


def reader_schedule(poll_interval: float, cards: int, uid: str, seed: int = 5,
                    ready_after: float = ISO_READY_AFTER) -> tuple[list[float], float]:
    """In emulated time (no host noise): the seconds from each of `cards` cards laid on
    the reader at a random moment among its looks to the tap, and the percentage of a
    core its looks at the empty field cost at 30 us per transfer."""
    rng = random.Random(seed)
    with _emulated_reader(poll_interval) as (reader, chip):
        reader.step()  # bring-up
        transfers, start = chip.transfers, chip.now
        while chip.now < start + 2.0:
            chip.sleep(reader.step()[1])
        cpu = (chip.transfers - transfers) * TRANSFER_SECONDS / (chip.now - start) * 100
        delays = []
        for _ in range(cards):
            badge, delay = reader.step()  # a look at the empty field
            early = rng.uniform(0, delay)
            chip.sleep(early)
            card = chip.place(Card(uid, ready_after=ready_after))
            placed = chip.now
            chip.sleep(delay - early)
            while (look := reader.step())[0] is None:
                chip.sleep(look[1])
            delays.append(chip.now - placed)
            chip.remove(card)
            away = chip.now + reader.config.rearm + 0.2
            while chip.now < away:
                chip.sleep(reader.step()[1])
        return delays, cpu


def schedule_table(intervals: tuple[float, ...] = (0.008, 0.012, 0.016, 0.024, 0.05, 0.1),
                   cards: int = 400) -> list[dict[str, Any]]:
    """What the look interval buys: the reader's part of card to relay (7-byte UID, in
    emulated time) and the empty field's cost, for each interval."""
    rows = []
    for interval in intervals:
        delays, cpu = reader_schedule(interval, cards, badges_of(11)[0])
        rows.append({"poll_ms": interval * 1000, "p50_ms": round(percentile(delays, 50) * 1000, 2),
                     "p99_ms": round(percentile(delays, 99) * 1000, 2),
                     "max_ms": round(max(delays) * 1000, 2), "empty_field_cpu_percent": round(cpu, 3)})
    return rows


def mfrc522(presentations: int, idle_s: float, members: int) -> dict[str, Any]:
    """Both UID figures on one agent: first the idle window, then the cards."""
    with mfrc522_agent(members) as (timed, chip, _):
        time.sleep(0.5)  # let the start-up and the list settle
        figures = reader_idle(timed, chip, idle_s)
        figures.update(card_to_relay(timed, chip, presentations, members))
        return figures


if __name__ == "__main__":  # python -m agent.devtools.bench.card: the look interval's table
    import json

    for row in schedule_table():
        print(json.dumps(row))
