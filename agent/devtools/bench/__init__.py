"""fabpass's benchmarks: the figures docs/performance.md lists.

One module per family: `tap` (tap to relay, taps during a list apply),
`card` (card on an MFRC522 to relay, a UID card's and a secure card's, and the
reader's cost with no card),
`serial` (a serial reader's frame to relay), `cli` (the command line's cold
start), `apply` (a 100,000-member list into the cache, time and peak memory),
`outbox` (a durable commit on disk, replaying a backlog to a broker),
`archive` (an agent's bytes written per event and per heartbeat, a logbook
started late catching up), `idle` (a quiet agent's CPU and memory, and the
memory of one with secure cards), `fleet` (agents per broker) and `peers`
(the decision paths of makerspace-auth and RATT beside fabpass's).
`run(quick)` measures them all and returns one flat dict of figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.devtools.bench.common import calibration_ms, machine


@dataclass(frozen=True)
class Sizes:
    tap_members: int
    taps: int
    cards: int
    secure_cards: int
    reader_idle_s: float
    serial_frames: int
    cli_runs: int
    peer_rounds: int
    apply_members: int
    apply_runs: int
    apply_taps_members: int
    replay_events: int
    idle_s: float
    commits: int
    fleet_quick: bool
    bytes_taps: int
    catch_up_machines: int
    catch_up_events: int


FULL = Sizes(tap_members=100_000, taps=10_000, cards=400, secure_cards=200, reader_idle_s=20.0, serial_frames=200,
             cli_runs=20, peer_rounds=1_000,
             apply_members=100_000, apply_runs=3, apply_taps_members=100_000,
             replay_events=10_000, idle_s=30.0, commits=1_000, fleet_quick=False,
             bytes_taps=200, catch_up_machines=20, catch_up_events=1_000)
QUICK = Sizes(tap_members=20_000, taps=1_000, cards=60, secure_cards=20, reader_idle_s=3.0, serial_frames=20,
              cli_runs=5, peer_rounds=100,
              apply_members=100_000, apply_runs=1, apply_taps_members=20_000,
              replay_events=2_000, idle_s=5.0, commits=200, fleet_quick=True,
              bytes_taps=30, catch_up_machines=5, catch_up_events=200)

# figure -> ("<", "<=" or ">=", target): the issues' targets (2-core x86 dev machine)
TARGETS: dict[str, tuple[str, float]] = {
    "tap_to_relay_p50_ms": ("<", 0.5),
    "tap_to_relay_p99_ms": ("<", 0.5),
    "card_to_relay_p99_ms": ("<=", 30.0),
    "reader_idle_cpu_percent": ("<=", 1.0),
    "serial_frame_end_to_relay_p99_ms": ("<=", 5.0),
    "cli_cold_start_ms": ("<=", 100.0),
    "members_apply_100k_s": ("<", 3.0),
    "members_apply_100k_peak_mb": ("<", 120.0),
    "lookup_during_apply_p99_ms": ("<", 10.0),
    "outbox_replay_events_per_s": (">=", 5_000.0),
    "idle_cpu_percent": ("<", 0.5),
    "idle_rss_mb": ("<", 40.0),
    "idle_rss_secure_mb": ("<", 40.0),
}

# The figures' keys, in the order they are printed.
FIGURES = ("tap_to_relay_p50_ms", "tap_to_relay_p99_ms", "card_to_relay_p50_ms", "card_to_relay_p99_ms",
           "card_to_relay_secure_p50_ms", "card_to_relay_secure_p99_ms", "reader_idle_cpu_percent",
           "serial_frame_end_to_relay_p99_ms", "cli_cold_start_ms",
           "members_apply_100k_s", "members_apply_100k_peak_mb",
           "lookup_during_apply_p99_ms", "outbox_replay_events_per_s", "idle_cpu_percent", "idle_rss_mb",
           "idle_rss_secure_mb", "outbox_commit_p99_ms", "outbox_bytes_per_event", "heartbeat_bytes_per_hour",
           "archive_catch_up_events_per_s", "fleet_agents_per_broker")


def _families(sizes: Sizes) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    from agent.devtools.bench import (
        apply,
        archive,
        capacity,
        card,
        cli,
        idle,
        outbox,
        peers,
        serial,
        tap,
    )

    return [
        ("tap to relay", lambda: tap.tap_to_relay(sizes.taps, sizes.tap_members)),
        ("card to relay", lambda: card.mfrc522(sizes.cards, sizes.reader_idle_s, sizes.tap_members)),
        ("secure card to relay", lambda: card.secure_card_to_relay(sizes.secure_cards, sizes.tap_members)),
        ("serial frame to relay", lambda: serial.serial_frames(sizes.serial_frames)),
        ("command line", lambda: cli.cli_cold_start(sizes.cli_runs)),
        ("members apply", lambda: apply.members_apply(sizes.apply_members, sizes.apply_runs)),
        ("taps during apply", lambda: tap.lookup_during_apply(sizes.apply_taps_members)),
        ("outbox commit", lambda: outbox.outbox_commit(sizes.commits)),
        ("outbox replay", lambda: outbox.outbox_replay(sizes.replay_events)),
        ("outbox bytes", lambda: {**archive.outbox_bytes(sizes.bytes_taps), **archive.heartbeat_bytes()}),
        ("archive catch-up", lambda: archive.archive_catch_up(sizes.catch_up_machines, sizes.catch_up_events)),
        ("idle agent", lambda: idle.idle(sizes.idle_s)),
        ("idle agent, secure cards", idle.idle_secure_rss),
        ("fleet", lambda: capacity.agents_per_broker(sizes.fleet_quick)),
        ("peers", lambda: peers.compare(sizes.peer_rounds, sizes.tap_members)),
    ]


def run(quick: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every figure; returns them with `quick`, `machine` and `python`."""
    from agent.devtools.bench.card import require_driver

    require_driver()
    sizes = QUICK if quick else FULL
    figures: dict[str, Any] = {"quick": quick}
    info = machine()  # before we load the machine ourselves
    info["calibration_start_ms"] = calibration_ms()
    started = time.monotonic()
    for name, measure in _families(sizes):
        if progress:
            progress(name)
        begun = time.monotonic()
        figures.update(measure())
        figures.setdefault("seconds", {})[name] = round(time.monotonic() - begun, 1)
    info["calibration_end_ms"] = calibration_ms()
    figures["python"] = info.pop("python")
    figures["machine"] = info
    figures["bench_s"] = round(time.monotonic() - started, 1)
    return figures


def verdict(key: str, value: Any) -> str:
    """"ok", "MISS" or "" (no target) for one figure."""
    if key not in TARGETS or not isinstance(value, (int, float)):
        return ""
    op, target = TARGETS[key]
    ok = {"<": value < target, "<=": value <= target, ">=": value >= target}[op]
    return "ok" if ok else "MISS"


def target_text(key: str) -> str:
    if key not in TARGETS:
        return "-"
    op, target = TARGETS[key]
    return f"{op} {target:g}"
