"""How many agents one local mosquitto serves: the `fleet_agents_per_broker` benchmark.

Agents are added in steps (`start`, then ×`factor`, up to `cap`); at each
step every agent taps once per `interval_s`, staggered, for `window_s`, and
the latency of each tap is measured from the tap to a subscriber receiving
its event (the logbook collector subscribes alike and gets it at the same
moment). The answer is the largest step whose p99 stayed under
`threshold_ms`. The agents run in worker processes of up to `MAX_AGENTS`
each (agent/devtools/fleet/pool.py), all on this machine, so on a small machine the
figure is bounded by its CPU as much as by the broker.
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.devtools.bench.common import percentile, ram_dir
from agent.devtools.fleet import population as pop
from agent.devtools.fleet.node import MAX_AGENTS
from agent.devtools.fleet.pool import MachinePool, RemoteMachine
from agent.devtools.fleet.sim import SETTLE_S, publish_members, wait_for_list
from agent.devtools.fleet.witness import Witness
from agent.devtools.localbroker import LocalBroker
from agent.devtools.wait import wait_for

QUICK = {"start": 2, "cap": 8, "window_s": 5.0, "per_worker": 4}  # 8 agents: two workers
CAP = 640
PREFIX = "fabpass-capacity"


@dataclass(frozen=True)
class Capacity:
    agents: int  # the largest fleet whose p99 met the threshold (0: not even the first step)
    p99_ms: dict[int, float]  # fleet size -> p99 measured (inf: some event never arrived)
    threshold_ms: float
    interval_s: float
    cap_reached: bool

    def as_dict(self) -> dict[str, Any]:
        return {"fleet_agents_per_broker": self.agents,
                "fleet_p99_ms": {str(n): round(p, 2) for n, p in self.p99_ms.items()},
                "fleet_threshold_ms": self.threshold_ms, "fleet_tap_interval_s": self.interval_s,
                "fleet_cap_reached": self.cap_reached}


def _measure(machines: list[RemoteMachine], badges: list[str], witness: Witness, rng: random.Random,
             interval_s: float, window_s: float) -> list[float]:
    """Tap every machine once per interval (staggered) for the window; latencies in ms."""
    start = time.monotonic()
    plan = sorted((start + rng.uniform(0, interval_s) + k * interval_s, i)
                  for i in range(len(machines)) for k in range(max(1, math.ceil(window_s / interval_s))))
    plan = [(at, i) for at, i in plan if at < start + window_s] or plan[:1]
    taps: list[tuple[str, float, Any]] = []
    for at, i in plan:
        time.sleep(max(0.0, at - time.monotonic()))  # the schedule, not a wait for a condition
        taps.append((machines[i].id, time.monotonic(), machines[i].submit_tap(rng.choice(badges))))
    deadline = time.monotonic() + SETTLE_S
    latencies = []
    for machine_id, tapped, future in taps:
        seq = future.result(SETTLE_S)
        with contextlib.suppress(TimeoutError):  # never seen: an infinite latency
            wait_for(lambda: (machine_id, seq) in witness.first_seen, max(0.0, deadline - time.monotonic()),
                     "the event")
        seen = witness.first_seen.get((machine_id, seq))
        latencies.append(math.inf if seen is None else (seen - tapped) * 1000)
    return latencies


def capacity(quick: bool = False, start: int = 10, factor: float = 2.0, cap: int = CAP,
             window_s: float = 20.0, interval_s: float = 10.0, threshold_ms: float = 100.0,
             seed: int = 1, per_worker: int = MAX_AGENTS) -> Capacity:
    """Ramp a fleet on a fresh local mosquitto until p99 passes `threshold_ms` or `cap` agents run.

    `quick` (for CI) means 2, 4 and 8 agents for 5 s each, in workers of 4
    agents (about 20 s in all).
    Agents keep their storage on a RAM filesystem when there is one (each real
    agent has its own SD card; one shared disk would be measured instead of the
    broker).
    """
    if quick:
        start, cap, window_s, per_worker = QUICK["start"], QUICK["cap"], QUICK["window_s"], QUICK["per_worker"]
    rng = random.Random(seed)
    specs = pop.machines(cap)
    tappers = pop.population(rng, max(10, 3 * cap))
    badges = [t.badge for t in tappers]
    p99s: dict[int, float] = {}
    best = 0
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(ram_dir("fleet"))
        except RuntimeError:  # no tmpfs: the temp dir
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fabpass-capacity-"))
        (Path(tmp) / "broker").mkdir()
        broker = LocalBroker(Path(tmp) / "broker")
        broker.start()
        stack.callback(broker.stop)
        witness = Witness(broker.broker, PREFIX)
        witness.start()
        stack.callback(witness.stop)
        version = int(time.time())
        publish_members(broker.broker, PREFIX, tappers, version)
        pool = MachinePool(Path(tmp), broker.url, PREFIX, per_worker)
        stack.callback(pool.close)
        machines: list[RemoteMachine] = []
        size = max(1, start)
        while True:
            while len(machines) < size:
                # A worker's worth at a time: each new agent applies the list in a child
                # process, and hundreds at once would starve the running ones.
                added = pool.start(specs[len(machines):min(size, len(machines) + per_worker)])
                wait_for_list(added, version)
                machines += added
            p99s[size] = percentile(_measure(machines, badges, witness, rng, interval_s, window_s), 99)
            if p99s[size] >= threshold_ms:
                break
            best = size
            if size >= cap:
                break
            size = min(cap, max(size + 1, round(size * factor)))
    return Capacity(best, p99s, threshold_ms, interval_s, cap_reached=best >= cap)


def agents_per_broker(quick: bool) -> dict[str, Any]:
    """The benchmark's figures; JSON has no infinity, so a step where some event never arrived is null."""
    figures = capacity(quick=quick).as_dict()
    figures["fleet_p99_ms"] = {n: (p if p == p and abs(p) != float("inf") else None)
                               for n, p in figures.get("fleet_p99_ms", {}).items()}
    return figures
