"""`fabpass fleet`: N real agents, members tapping at random, the real logbook, then the check.

Everything is the real thing except the hardware (mock pins, simulated
readers) and the people: a seeded random.Random decides who taps where and
when, so a run can be repeated with `--seed`. The logbook is a `fabpass
logbook run` process. The agents run in this process (their relay pins read
directly), or with `chaos` each as a `fabpass run` process of its own, so
that it can be killed (agent/devtools/fleet/chaos.py).
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
from agent.devtools.fleet.chaos import Chaos, plan
from agent.devtools.fleet.check import Key, RelayFault, check
from agent.devtools.fleet.node import MAX_AGENTS, SimMachine
from agent.devtools.fleet.proc import AgentProc, LogbookProc
from agent.devtools.fleet.witness import Witness
from agent.devtools.localbroker import LocalBroker
from agent.devtools.wait import wait_for
from agent.link.broker import Broker
from agent.link.publish import publish_acknowledged
from agent.link.topics import Topics
from agent.logbook.queries import sessions
from agent.logbook.store import open_db

SETTLE_S = 30.0  # longest wait for lists to apply
ARCHIVE_S = 120.0  # longest wait at the end for the logbook to confirm and hold everything


class Machine(Protocol):
    """A simulated machine as the members and the check see it: in-process or a process."""

    id: str
    name: str

    def tap(self, badge: str) -> tuple[dict[str, Any], RelayFault | None, int]: ...

    def sweep(self) -> RelayFault | None: ...

    def status(self) -> dict[str, Any]: ...

    def stop(self, wait: bool = True) -> None: ...

    def join(self) -> None: ...

    def made(self) -> tuple[str, int]: ...


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
    chaos: bool = False  # agents as processes, and everything in agent/devtools/fleet/chaos.py


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
    """The members: each arrives at a machine at random, and leaves it after a while.

    Machines may be taken down (killed, wiped, stopped) and brought up again from
    another thread: a member walks away from a machine that is down, and taking one
    down first ends the session on it, if any.
    """

    def __init__(self, rng: random.Random, machines: list[Machine], specs: list[pop.Machine],
                 tappers: list[pop.Tapper], options: FleetOptions, t0: float, down: set[int] | None = None) -> None:
        self.rng, self.machines, self.specs, self.tappers, self.options = rng, machines, specs, tappers, options
        self.mean_gap = len(tappers) / (len(machines) * options.taps_per_machine_s)
        self.holder: dict[int, int] = {}  # machine index -> tapper index
        self.down = set(down or ())
        self.tally = Tally()
        self.made_at: dict[Key, float] = {}  # (machine, incarnation, seq) -> seconds into the run
        self.t0 = t0
        self._lock = threading.Lock()  # one tap at a time, and none while a machine changes state
        self._queue: list[tuple[float, int, str, int, int]] = []  # (due, n, what, tapper, machine)
        self._n = 0

    def _at(self, due: float, what: str, tapper: int, machine: int = -1) -> None:
        self._n += 1
        heapq.heappush(self._queue, (due, self._n, what, tapper, machine))

    def take_down(self, index: int, end_session: bool = True) -> None:
        """No more taps on `index`; the session on it, if any, ends with its holder's tap
        (or, without `end_session`, is left to the agent's next start: a crash)."""
        with self._lock:
            self.down.add(index)
            tapper = self.holder.pop(index, None)
            if tapper is not None and end_session:
                self._tap(index, self.tappers[tapper].badge)

    def bring_up(self, index: int) -> None:
        with self._lock:
            self.down.discard(index)

    def in_use(self) -> list[int]:
        with self._lock:
            return sorted(self.holder)

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
            with self._lock:
                if due == next_sweep:
                    self._sweep()
                    next_sweep += 1.0
                    continue
                _, _, what, tapper, machine = heapq.heappop(self._queue)
                (self._arrive if what == "arrive" else self._leave)(tapper, machine, due)

    def _sweep(self) -> None:
        for index, machine in enumerate(self.machines):
            if index not in self.down:
                with contextlib.suppress(ConnectionError, OSError, ValueError):
                    fault = machine.sweep()
                    if fault is not None:
                        self.tally.faults.append(fault)

    def _tap(self, index: int, badge: str) -> dict[str, Any] | None:
        """A tap on machine `index`: its outcome, or None when the machine did not answer."""
        machine = self.machines[index]
        try:
            outcome, fault, seq = machine.tap(badge)
        except (ConnectionError, OSError, ValueError, TimeoutError, RuntimeError):
            return None  # killed meanwhile: the member gets nothing, as at a dead reader
        self.tally.add(outcome, fault)
        self.made_at[machine.id, getattr(machine, "incarnation", ""), seq] = time.monotonic() - self.t0
        return outcome

    def _choose(self, t: pop.Tapper, tapper: int) -> int | None:
        up = [i for i in range(len(self.machines)) if i not in self.down]
        held = [m for m, h in self.holder.items() if h != tapper and m not in self.down]
        if not up:
            return None
        if t.staff and held and self.rng.random() < self.options.staff_interrupts:
            return self.rng.choice(held)
        fitting = [i for i in up if self.specs[i].induction in t.valid]
        if fitting and self.rng.random() < self.options.inducted_choice:
            return self.rng.choice(fitting)
        return self.rng.choice(up)

    def _arrive(self, tapper: int, _: int, now: float) -> None:
        t = self.tappers[tapper]
        machine = self._choose(t, tapper)
        outcome = self._tap(machine, t.badge) if machine is not None else None
        if outcome is not None and outcome["action"] == "started":
            self.holder[machine] = tapper
            self._at(now + self.rng.uniform(*self.options.session_s), "leave", tapper, machine)
            return
        if outcome is not None and outcome["action"] == "ended":  # a staff tap ended someone else's session
            self.holder.pop(machine, None)
        self._at(now + self.rng.expovariate(1 / self.mean_gap), "arrive", tapper)

    def _leave(self, tapper: int, machine: int, now: float) -> None:
        if self.holder.get(machine) == tapper:  # not ended meanwhile by staff or a take_down
            outcome = self._tap(machine, self.tappers[tapper].badge)
            if outcome is not None and outcome["action"] == "ended":
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
        machine = SimMachine(spec.id, spec.induction, root / spec.id, url, prefix, password_file, resend_after="5s")
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
    if options.chaos and options.broker_url is not None:
        raise ValueError("chaos restarts the broker: it needs the local one")
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
        say(f"broker {broker}{' (local mosquitto)' if local else ''}, topic prefix {options.prefix!r}"
            + (", chaos" if options.chaos else ""))
        logbook = LogbookProc(root / "logbook.db", url, options.prefix, f"fabpass-fleet-logbook-{uuid.uuid4().hex[:12]}")
        stack.callback(logbook.stop)
        if not options.chaos:
            logbook.start()
        witness = Witness(broker, options.prefix)
        witness.start()
        stack.callback(witness.stop)
        if local is None:
            stack.callback(_clear_retained, broker, options.prefix, [s.id for s in specs])
        version = int(time.time())
        listed = publish_members(broker, options.prefix, tappers, version)
        say(f"member list version {version}: {listed} members, "
            f"{len(tappers) - listed} unknown badges; starting {len(specs)} agents")
        machines: list[Machine]
        if options.chaos:
            machines = start_processes(specs, root, url, options.prefix, stack)
            steps = plan(rng, options.duration, len(machines))
            twin_of = next(step.machine for step in steps if step.scenario == "twin")
            twin = AgentProc(specs[twin_of].id, specs[twin_of].induction, root / f"{specs[twin_of].id}-twin", url,
                             options.prefix, name=f"{specs[twin_of].id}-twin")
            stack.callback(twin.kill)
            machines_and_twin = [*machines, twin]
            specs_and_twin = [*specs, specs[twin_of]]
        else:
            machines = start_machines(specs, root, url, options.prefix, options.password_file, stack)
            machines_and_twin, specs_and_twin = list(machines), list(specs)
        wait_for_list(machines, version)

        say(f"tapping for {options.duration:g} s" + (f" with {options.outages} broker outages" if options.outages else ""))
        stop, outages_done = threading.Event(), []
        t0 = time.monotonic()
        outage_thread = None
        if options.outages and local is not None:
            k = options.outages
            at = [t0 + options.duration * (i + 1) / (k + 1) - options.outage_s / 2 for i in range(k)]
            outage_thread = threading.Thread(target=_outages, args=(local, at, options.outage_s, stop, outages_done),
                                             name="fleet-outages", daemon=True)
            outage_thread.start()
        driver = Driver(rng, machines_and_twin, specs_and_twin, tappers, options, t0,
                        down={len(machines)} if options.chaos else None)
        made: dict[tuple[str, str], int] = {}
        chaos = None
        if options.chaos:
            chaos = Chaos(steps, machines, twin, logbook, local, driver,
                          lambda: publish_members(broker, options.prefix, tappers, version), made, t0)
            chaos.start()
        try:
            driver.run(options.duration, stop)
        finally:
            stop.set()
            if chaos is not None:
                chaos.join()
            if outage_thread is not None:
                outage_thread.join()
            if local is not None and not local.running:
                local.start()
        for happening in chaos.happenings if chaos else []:
            say(f"chaos: {happening}" + (f": FAILED: {happening.failure}" if happening.failure else ""))

        say("waiting for the logbook to confirm every event, then stopping the agents")
        if not logbook.running:
            logbook.start()
        for machine in machines:
            if isinstance(machine, AgentProc) and not machine.running:
                machine.start()
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: all(m.status()["unarchived"] == 0 for m in machines), ARCHIVE_S,
                     "every agent's events confirmed", step=0.2)
        for machine in machines:
            machine.stop(wait=False)
        for machine in machines:
            machine.join()
        faults = driver.tally.faults + [f for f in (_after_stop(m) for m in machines) if f]
        for machine in machines_and_twin:
            if (machine.storage / "agent.db").exists():
                incarnation, last_seq = machine.made()
                made[machine.id, incarnation] = last_seq

        expected = sum(made.values())
        reader = open_db(root / "logbook.db")
        try:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: reader.execute("SELECT count(*) FROM events").fetchone()[0] >= expected,
                         ARCHIVE_S, "the logbook to archive every event", step=0.1)
            archived = reader.execute("SELECT machine, incarnation, seq, event_id FROM events").fetchall()
            rows = sessions(reader, dt.datetime.now(dt.timezone.utc))
        finally:
            reader.conn.close()
        result = check(made, archived, witness.rows(), [(r["machine"], r["member_id"]) for r in rows if r["end"] is None],
                       faults, chaos.happenings if chaos else (), driver.made_at)
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
            "redelivered": witness.deliveries - witness.distinct,
            "outages": len(outages_done),
            "chaos": [h.as_dict() for h in chaos.happenings] if chaos else [],
            "broker": str(broker) + (" (local)" if local else ""),
            "elapsed_s": round(time.monotonic() - began, 1),
        }


def _after_stop(machine: Machine) -> RelayFault | None:
    """An in-process machine's relay pin after the stop (a process's is gone with it)."""
    return machine.relay_fault("after stop") if isinstance(machine, SimMachine) else None


def start_processes(specs: list[pop.Machine], root: Path, url: str, prefix: str,
                    stack: contextlib.ExitStack) -> list[AgentProc]:
    """One `fabpass run` process per spec, each killed when `stack` closes if still running."""
    machines = []
    for spec in specs:
        machine = AgentProc(spec.id, spec.induction, root / spec.id, url, prefix)
        stack.callback(machine.kill)
        machine.start()
        machines.append(machine)
    return machines


def _clear_retained(broker: Broker, prefix: str, machine_ids: list[str]) -> None:
    """Leave nothing of the run retained on someone else's broker."""
    topics = Topics(prefix)
    for topic in [topics.members, *(topics.status(m) for m in machine_ids)]:
        with contextlib.suppress(Exception):
            publish_acknowledged(broker, topic, b"", retain=True, timeout=5)
