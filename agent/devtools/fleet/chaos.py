"""`fabpass fleet --chaos`: what goes wrong in a lab, on a seeded schedule, while members tap.

- `late_logbook`: the logbook starts only once the machines have run a while
  (nobody was subscribed to their first events);
- `kill_agent`: kill -9 of a machine's agent (a crash, a power cut), one in use
  if any is, restarted a moment later on the same storage (its session then
  ends at its last heartbeat);
- `kill_logbook`: kill -9 of the logbook, restarted a moment later;
- `broker_forgets`: the broker restarted without persistence (every queued
  and retained message, every session gone; the member list is published
  again, as the lab admin would);
- `wipe_storage`: a machine's SD card replaced: once the logbook has confirmed
  all it made, its agent is killed, its storage deleted and a new agent (a new
  incarnation) started;
- `twin`: a second agent with the same machine id (a copied config) runs for a
  while beside the first; each must notice the other (`conflict` in status),
  and both are tapped.

`plan()` is pure: the same seed gives the same schedule. `Chaos.run()` carries
it out against the running lab, and records each `Happening` (with what the
scenario itself saw go wrong, if anything) for the check.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Protocol

from agent.devtools.fleet.check import Happening
from agent.devtools.fleet.proc import AgentProc, LogbookProc
from agent.devtools.localbroker import LocalBroker
from agent.devtools.wait import wait_for

SETTLE_S = 60.0  # longest wait for the archive to confirm a machine's events, or for a conflict


@dataclass(frozen=True)
class Step:
    at: float  # seconds into the run
    scenario: str
    machine: int | None = None  # an index into the machines


def plan(rng: random.Random, duration: float, machines: int) -> list[Step]:
    """Every scenario at least once, at seeded moments; kills of agents one per two machines."""
    def moment(lo: float, hi: float) -> float:
        return round(rng.uniform(lo, hi) * duration, 1)

    steps = [Step(moment(0.1, 0.2), "late_logbook")]
    steps += [Step(moment(0.1, 0.85), "kill_agent", rng.randrange(machines)) for _ in range(max(1, machines // 2))]
    steps += [Step(moment(0.3, 0.5), "kill_logbook"), Step(moment(0.5, 0.7), "broker_forgets"),
              Step(moment(0.4, 0.8), "wipe_storage", rng.randrange(machines)),
              Step(moment(0.2, 0.4), "twin", rng.randrange(machines))]
    return sorted(steps, key=lambda step: step.at)


class Tapping(Protocol):
    """What the chaos needs of the members: stop tapping a machine (ending its session, if
    anyone holds it), start again, and which machines are in use."""

    def take_down(self, index: int, end_session: bool = True) -> None: ...

    def bring_up(self, index: int) -> None: ...

    def in_use(self) -> list[int]: ...


class Chaos:
    """Carries out a plan in a thread of its own (`start`, then `join` once the tapping ends)."""

    def __init__(self, steps: list[Step], machines: list[AgentProc], twin: AgentProc, logbook: LogbookProc,
                 broker: LocalBroker, members: Tapping, republish: Callable[[], None],
                 made: MutableMapping[tuple[str, str], int], t0: float) -> None:
        self.steps, self.machines, self.second, self.logbook = steps, machines, twin, logbook
        self.broker, self.members, self.republish, self.made, self.t0 = broker, members, republish, made, t0
        self.happenings: list[Happening] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Stop after the scenario under way (the rest of the plan is dropped)."""
        self._stop.set()
        self._thread.join()

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        for step in self.steps:
            if self._stop.wait(max(0.0, step.at - self._now())):
                return
            began = self._now()
            index = step.machine
            if step.scenario == "kill_agent":  # a power cut in the middle of a session, when there is one
                index = next((i for i in self.members.in_use() if i < len(self.machines)), index)
            machine = self.machines[index] if index is not None else None
            try:
                detail, failure = getattr(self, step.scenario)(machine, index)
            except Exception as err:  # noqa: BLE001 - a scenario that fails is reported, the run goes on
                detail, failure = "", f"{type(err).__name__}: {err}"
            if step.scenario == "late_logbook":
                began = 0.0  # the logbook was away from the start
            self.happenings.append(Happening(step.scenario, machine.id if machine else None, began,
                                             self._now(), detail, failure))

    # -- the scenarios: each returns (detail, what went wrong or None) ---------------------------

    def late_logbook(self, machine: None, index: None) -> tuple[str, str | None]:
        self.logbook.start()
        return "the logbook starts", None

    def kill_agent(self, machine: AgentProc, index: int) -> tuple[str, str | None]:
        in_use = index in self.members.in_use()
        self.members.take_down(index, end_session=False)  # a session open at the kill: agent_restart
        if machine.running:
            machine.kill()
        self._stop.wait(1.0)
        machine.start()
        self.members.bring_up(index)
        return "kill -9" + (" during a session" if in_use else "") + ", restarted after 1 s", None

    def kill_logbook(self, machine: None, index: None) -> tuple[str, str | None]:
        self.logbook.kill()
        self._stop.wait(2.0)
        self.logbook.start()
        return "kill -9, restarted after 2 s", None

    def broker_forgets(self, machine: None, index: None) -> tuple[str, str | None]:
        self.broker.restart(forget=True)
        self.republish()
        return "restarted without persistence; the member list published again", None

    def wipe_storage(self, machine: AgentProc, index: int) -> tuple[str, str | None]:
        self.members.take_down(index)  # its session ends first: a wiped card cannot close it later
        if not self.logbook.running:
            self.logbook.start()
        try:
            _wait(lambda: machine.status()["unarchived"] == 0, "the archive to confirm its events")
        except TimeoutError as err:
            self.members.bring_up(index)
            return "", f"not wiped: {err}"
        old, last_seq = machine.made()
        machine.kill()
        self.made[machine.id, old] = last_seq
        shutil.rmtree(machine.storage)
        machine.start()
        self.members.bring_up(index)
        new = machine.status()["incarnation"]
        return f"incarnation {old} ({last_seq} events) replaced by {new}", None

    def twin(self, machine: AgentProc, index: int) -> tuple[str, str | None]:
        twin_index = len(self.machines)
        self.second.start()
        self.members.bring_up(twin_index)
        failure = None
        try:
            _wait(lambda: machine.status()["conflict"] and self.second.status()["conflict"],
                  "both agents to report the conflict")
        except TimeoutError as err:
            failure = f"{machine.id}: {err}"
        self._stop.wait(5.0)  # both are tapped meanwhile
        self.members.take_down(twin_index)
        self.second.stop()
        if failure is None:
            try:
                _wait(lambda: not machine.status()["conflict"], "the conflict to end with the twin's stop")
            except TimeoutError as err:
                failure = f"{machine.id}: {err}"
        return f"a second agent with the id, incarnation {self.second.made()[0]}", failure


def _wait(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` up to SETTLE_S (even once the tapping has ended); TimeoutError."""
    def holds() -> bool:
        try:
            return bool(condition())
        except (ConnectionError, OSError, ValueError):  # an agent restarting
            return False

    wait_for(holds, SETTLE_S, what, step=0.2)
