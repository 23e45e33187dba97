"""The bench on a Pi-class budget, as far as a bigger machine allows.

`python -m agent.devtools.bench.piclass [--ratio R] [--quick]` runs as root (or
in a cgroup delegated to its user): it puts itself, and everything it starts,
in a cgroup allowed 1/R of one core (CFS bandwidth: 1 ms of CPU in every R ms,
the least quota the kernel takes; cgroup v1's cpu.cfs_quota_us or v2's cpu.max), measures tap to relay and card to relay
over 100,000 members, applies lists of 10,000 and 100,000 members, and the idle
agent's and the MFRC522 reader's cost, then leaves the cgroup and removes it.

R is how many times faster one core of this machine is than a Pi Zero 2 W's
(Cortex-A53 at 1 GHz). The default, 6, comes from sysbench 1.0.20's CPU test
(`sysbench cpu --threads=1 run`, primes to 10,000): 687 events/s published for
a Pi 3B+, whose core is the same A53 at 1.4 GHz, so about 490 at 1 GHz, against
2,600 to 3,200 measured on the 2-core Xeon VM this was written on. Python's
interpreter leans on branch prediction and caches where the in-order A53 is
weaker still, so for fabpass's Python 6 is likely optimistic; --ratio 10 gives
a harsher bound.

What a quota can and cannot emulate: a computation longer than a period (an
apply) runs R times slower, as on the Pi. A burst shorter than the 1 ms quota
(a tap: a tenth of a millisecond here) still runs at this machine's speed when
it starts early in a period, so the latency figures under the limit are lower
bounds; for them, `*_scaled_ms` multiplies the CPU part by R. CPU time does not
grow under a quota either, so the idle costs are given as measured and scaled
(the 30 us per SPI transfer of the reader's model is a Pi's figure already,
and is not scaled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
QUOTA_US = 1000  # the kernel's least quota: the period is R times it
DEFAULT_RATIO = 6.0


@contextlib.contextmanager
def cpu_limited(ratio: float) -> Iterator[str]:
    """This process (and its children) in a cgroup allowed 1/ratio of a core; the cgroup's path."""
    period = round(QUOTA_US * ratio)
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    parent = CGROUP_ROOT if v2 else CGROUP_ROOT / "cpu"
    group = parent / f"fabpass-piclass-{os.getpid()}"
    try:
        group.mkdir()
        if v2:
            (group / "cpu.max").write_text(f"{QUOTA_US} {period}\n")
        else:
            (group / "cpu.cfs_period_us").write_text(f"{period}\n")
            (group / "cpu.cfs_quota_us").write_text(f"{QUOTA_US}\n")
        (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
    except OSError as err:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise SystemExit(f"cannot make a CPU-limited cgroup under {parent}: {err} "
                         "(run as root, or in a cgroup delegated to this user)") from None
    try:
        yield str(group)
    finally:
        (parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
        group.rmdir()


def measure(ratio: float, quick: bool) -> dict[str, Any]:
    from agent.devtools.bench import apply, card, idle, tap
    from agent.devtools.bench.common import calibration_ms, machine

    members = 20_000 if quick else 100_000
    figures: dict[str, Any] = {"ratio": ratio, "quick": quick, "machine": machine()}
    with cpu_limited(ratio) as group:
        figures["cgroup"] = group
        figures["calibration_limited_ms"] = calibration_ms()
        figures.update(tap.tap_to_relay(200 if quick else 2000, members))
        figures.update(card.mfrc522(40 if quick else 200, 5.0 if quick else 20.0, members))
        for size in (10_000, 100_000):
            result = apply.members_apply(size, 1 if quick else 3)
            figures[f"members_apply_{size // 1000}k_s"] = round(result["members_apply_100k_s"] * size / 100_000, 3)
            figures[f"members_apply_{size // 1000}k_peak_mb"] = result["members_apply_100k_peak_mb"]
        figures.update(idle.idle(5.0 if quick else 30.0))
    figures["calibration_ms"] = calibration_ms()
    cpu_part = figures["tap_to_relay_p50_ms"]  # all CPU: lookup, rules, the commit on tmpfs, the relay
    figures["tap_to_relay_p50_scaled_ms"] = round(cpu_part * ratio, 3)
    figures["tap_to_relay_p99_scaled_ms"] = round(figures["tap_to_relay_p99_ms"] * ratio, 3)
    spi = figures["reader_idle_cpu_percent"]
    figures["idle_cpu_percent_scaled"] = round(figures["idle_cpu_percent"] * ratio, 3)
    figures["reader_idle_thread_cpu_percent_scaled"] = round(
        spi + (figures["reader_idle_thread_cpu_percent"] - spi) * ratio, 3)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agent.devtools.bench.piclass", description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=DEFAULT_RATIO,
                        help="how many times faster this machine's core is than the Pi's (default 6)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and counts")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.ratio, args.quick), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
