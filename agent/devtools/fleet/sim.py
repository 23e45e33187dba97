"""`fabpass fleet`: N real agents, members tapping at random, the real logbook, then the check.

Everything is the real thing except the hardware (mock pins, simulated
readers) and the people: a seeded random.Random decides who taps where and
when, so a run can be repeated with `--seed`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import json
import random
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.core.timespec import rfc3339
from agent.devtools.fleet import population as pop
from agent.devtools.fleet.check import RelayFault, check
from agent.devtools.fleet.node import MAX_AGENTS, SimMachine
from agent.devtools.fleet.witness import Witness
from agent.devtools.localbroker import LocalBroker
from agent.devtools.wait import wait_for
from agent.link.broker import Broker
from agent.link.publish import publish_acknowledged
from agent.link.topics import Topics
from agent.logbook.collector import Collector
from agent.logbook.queries import sessions
from agent.logbook.store import Outcome, open_db

SETTLE_S = 30.0  # longest wait for lists to apply and the logbook to catch up


@dataclass(frozen=True)
class FleetOptions:
    machines: int
    duration: float
    broker_url: str | None = None  # None: start a local mosquitto (and stop it at the end)
    password_file: str | None = None
    prefix: str = "fabpass-fleet"
    outages: int = 0  # broker restarts during the run (local broker only)
    outage_s: float = 2.0
    seed: int = 1
    taps_per_machine_s: float = 0.25  # the mean rate of arrivals at each machine
    session_s: tuple[float, float] = (2.0, 8.0)
    staff_interrupts: float = 0.3  # how often a staff member's tap ends someone's session
    inducted_choice: float = 0.7  # how often a member walks to a machine they are inducted on
    members_per_machine: int = 3
    storage: Path | None = None  # where the temporary folder goes (default: the system's temp dir)


@dataclass
class Tally:
    taps: int = 0
    actions: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    faults: list[RelayFault] = field(default_factory=list)

    def add(self, outcome: dict[str, Any], fault: RelayFault | None) -> None:
        self.taps += 1
        self.actions[outcome["action"]] += 1
        if outcome["action"] == "refused":
            self.refused[outcome["reason"]] += 1
        if fault is not None:
            self.faults.append(fault)


class Driver:
    """The members: each arrives at a machine at random, and leaves it after a while."""

    def __init__(self, rng: random.Random, machines: list[SimMachine], specs: list[pop.Machine],
                 tappers: list[pop.Tapper], options: FleetOptions) -> None:
        self.rng, self.machines, self.specs, self.tappers, self.options = rng, machines, specs, tappers, options
        self.mean_gap = len(tappers) / (len(machines) * options.taps_per_machine_s)
        self.holder: dict[int, int] = {}  # machine index -> tapper index
        self.tally = Tally()
        self._queue: list[tuple[float, int, str, int, int]] = []  # (due, n, what, tapper, machine)
        self._n = 0

    def _at(self, due: float, what: str, tapper: int, machine: int = -1) -> None:
        self._n += 1
        heapq.heappush(self._queue, (due, self._n, what, tapper, machine))

    def run(self, duration: float, stop: threading.Event) -> None:
        start = time.monotonic()
        end, next_sweep = start + duration, start + 1.0
        for t in range(len(self.tappers)):
            self._at(start + self.rng.expovariate(1 / self.mean_gap), "arrive", t)
        while not stop.is_set():
            due = min(self._queue[0][0], next_sweep)
            if due >= end:
                break
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            if due == next_sweep:
                self.tally.faults += [f for f in (m.sweep() for m in self.machines) if f]
                next_sweep += 1.0
                continue
            _, _, what, tapper, machine = heapq.heappop(self._queue)
            (self._arrive if what == "arrive" else self._leave)(tapper, machine, due)

    def _choose(self, t: pop.Tapper, tapper: int) -> int:
        held = [m for m, h in self.holder.items() if h != tapper]
        if t.staff and held and self.rng.random() < self.options.staff_interrupts:
            return self.rng.choice(held)
        fitting = [i for i, spec in enumerate(self.specs) if spec.induction in t.valid]
        if fitting and self.rng.random() < self.options.inducted_choice:
            return self.rng.choice(fitting)
        return self.rng.randrange(len(self.machines))

    def _arrive(self, tapper: int, _: int, now: float) -> None:
        t = self.tappers[tapper]
        machine = self._choose(t, tapper)
        outcome, fault, _seq = self.machines[machine].tap(t.badge)
        self.tally.add(outcome, fault)
        if outcome["action"] == "started":
            self.holder[machine] = tapper
            self._at(now + self.rng.uniform(*self.options.session_s), "leave", tapper, machine)
            return
        if outcome["action"] == "ended":  # a staff tap ended someone else's session
            self.holder.pop(machine, None)
        self._at(now + self.rng.expovariate(1 / self.mean_gap), "arrive", tapper)

    def _leave(self, tapper: int, machine: int, now: float) -> None:
        if self.holder.get(machine) == tapper:  # not ended meanwhile by staff
            outcome, fault, _seq = self.machines[machine].tap(self.tappers[tapper].badge)
            self.tally.add(outcome, fault)
            if outcome["action"] == "ended":
                del self.holder[machine]
        self._at(now + self.rng.expovariate(1 / self.mean_gap), "arrive", tapper)


def _outages(broker: LocalBroker, at: list[float], length: float, stop: threading.Event, done: list[float]) -> None:
    """Stop the broker at each monotonic time in `at` for `length` seconds; always restart it."""
    for moment in at:
        if stop.wait(max(0.0, moment - time.monotonic())):
            return
        broker.stop()
        stop.wait(length)  # the outage itself
        broker.start()
        done.append(moment)


def start_machines(specs: list[pop.Machine], root: Path, url: str, prefix: str,
                   password_file: str | None, stack: contextlib.ExitStack) -> list[SimMachine]:
    """One running SimMachine per spec, each stopped when `stack` closes."""
    machines = []
    for spec in specs:
        machine = SimMachine(spec.id, spec.induction, root / spec.id, url, prefix, password_file)
        stack.callback(machine.stop)
        machine.start()
        machines.append(machine)
    return machines


def publish_members(broker: Broker, prefix: str, tappers: list[pop.Tapper], version: int) -> int:
    """Publish the generated list as the retained snapshot; returns its member count."""
    now = dt.datetime.now(dt.timezone.utc)
    snapshot = pop.member_list(tappers, version, now.date(), rfc3339(now))
    publish_acknowledged(broker, Topics(prefix).members, json.dumps(snapshot).encode(), retain=True)
    return len(snapshot["members"])


class _Running(Protocol):
    id: str

    def status(self) -> dict[str, Any]: ...


def wait_for_list(machines: Sequence[_Running], version: int) -> None:
    for machine in machines:
        wait_for(lambda: machine.status()["members_version"] == version, SETTLE_S,
              f"{machine.id} to apply member list version {version}")


def run_fleet(options: FleetOptions, say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the simulation and the check; returns the report (see docs/fleet.md).

    ValueError for more machines than one process can host (MAX_AGENTS).
    """
    if not 1 <= options.machines <= MAX_AGENTS:
        raise ValueError(f"machines: 1 to {MAX_AGENTS} (the agents share one process)")
    began = time.monotonic()
    rng = random.Random(options.seed)
    specs = pop.machines(options.machines)
    tappers = pop.population(rng, options.members_per_machine * options.machines)
    with tempfile.TemporaryDirectory(prefix="fabpass-fleet-", dir=options.storage) as tmp, \
            contextlib.ExitStack() as stack:
        root = Path(tmp)
        local = None
        if options.broker_url is None:
            (root / "broker").mkdir()
            local = LocalBroker(root / "broker")
            local.start()
            stack.callback(local.stop)
        url = local.url if local else options.broker_url
        broker = Broker.parse(url).with_credentials(password_file=options.password_file)
        say(f"broker {broker}{' (local mosquitto)' if local else ''}, topic prefix {options.prefix!r}")
        run_id = uuid.uuid4().hex[:12]
        collector = Collector(broker, root / "logbook.db", options.prefix,
                              client_id=f"fabpass-fleet-logbook-{run_id}", session_expiry_s=600)
        collector.start()
        stack.callback(collector.stop)
        wait_for(collector.connected.is_set, SETTLE_S, "the logbook collector to connect")
        witness = Witness(broker, options.prefix)
        witness.start()
        stack.callback(witness.stop)
        if local is None:
            stack.callback(_clear_retained, broker, options.prefix, [s.id for s in specs])
        version = int(time.time())
        listed = publish_members(broker, options.prefix, tappers, version)
        say(f"member list version {version}: {listed} members, "
            f"{len(tappers) - listed} unknown badges; starting {len(specs)} agents")
        machines = start_machines(specs, root, url, options.prefix, options.password_file, stack)
        wait_for_list(machines, version)

        say(f"tapping for {options.duration:g} s" + (f" with {options.outages} broker outages" if options.outages else ""))
        stop, outages_done = threading.Event(), []
        outage_thread = None
        if options.outages and local is not None:
            t0, k = time.monotonic(), options.outages
            at = [t0 + options.duration * (i + 1) / (k + 1) - options.outage_s / 2 for i in range(k)]
            outage_thread = threading.Thread(target=_outages, args=(local, at, options.outage_s, stop, outages_done),
                                             name="fleet-outages", daemon=True)
            outage_thread.start()
        driver = Driver(rng, machines, specs, tappers, options)
        try:
            driver.run(options.duration, stop)
        finally:
            stop.set()
            if outage_thread is not None:
                outage_thread.join()
            if local is not None and not local.running:
                local.start()

        say("stopping the agents (open sessions end with `shutdown`), waiting for their outboxes to drain")
        for machine in machines:
            machine.stop(wait=False)
        for machine in machines:
            machine.join()
        faults = driver.tally.faults + [f for f in (m.relay_fault("after stop") for m in machines) if f]
        sent, left = {}, {}
        for machine in machines:
            sent[machine.id], left[machine.id] = machine.outbox_after_stop()

        expected = sum(sent.values())
        reader = open_db(root / "logbook.db")
        try:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: reader.execute("SELECT count(*) FROM events").fetchone()[0] >= expected,
                      SETTLE_S, "the logbook to archive every event")
            archived = reader.execute("SELECT machine, seq, event_id FROM events").fetchall()
            rows = sessions(reader, dt.datetime.now(dt.timezone.utc))
        finally:
            reader.conn.close()
        result = check(sent, archived, witness.rows(),
                       [(r["machine"], r["member_id"]) for r in rows if r["end"] is None], faults, left)
        tally = driver.tally
        return {
            **result.as_dict(),
            "machines": len(machines),
            "members": listed,
            "badges": len(tappers),
            "duration_s": options.duration,
            "seed": options.seed,
            "taps": tally.taps,
            "granted": tally.taps - tally.actions["refused"],
            "refused": tally.actions["refused"],
            "actions": dict(sorted(tally.actions.items())),
            "refused_by_reason": dict(tally.refused.most_common()),
            "sessions": len(rows),
            "sessions_by_end": dict(Counter(r["end_reason"] for r in rows if r["end"]).most_common()),
            "redelivered": collector.counts[Outcome.DUPLICATE],
            "outages": len(outages_done),
            "broker": str(broker) + (" (local)" if local else ""),
            "elapsed_s": round(time.monotonic() - began, 1),
        }


def _clear_retained(broker: Broker, prefix: str, machine_ids: list[str]) -> None:
    """Leave nothing of the run retained on someone else's broker."""
    topics = Topics(prefix)
    for topic in [topics.members, *(topics.status(m) for m in machine_ids)]:
        with contextlib.suppress(Exception):
            publish_acknowledged(broker, topic, b"", retain=True, timeout=5)
