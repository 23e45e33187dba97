"""Every MQTT topic fabpass uses, built in one place.

`P` is the topic prefix (default `fabpass`), `ID` a machine id:

| topic | who publishes | what |
| --- | --- | --- |
| `P/members` | the lab admin | the member list, retained |
| `P/machines/ID/status` | the machine's agent | its state, retained; the will is `offline` |
| `P/machines/ID/events` | the machine's agent | usage events, QoS 1 |
| `P/machines/ID/commands` | technicians | lock, unlock, end_session |
| `P/machines/ID/sim/tap` | tests, demos | a badge, for a simulated agent |
| `P/machines/ID/archived` | the logbook | what it has archived of the machine's events, retained |
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "fabpass"
ANY = "+"  # the single-level wildcard, for a subscription to every machine


@dataclass(frozen=True)
class Topics:
    prefix: str = DEFAULT_PREFIX

    @property
    def members(self) -> str:
        return f"{self.prefix}/members"

    def machine(self, machine: str, kind: str) -> str:
        return f"{self.prefix}/machines/{machine}/{kind}"

    def status(self, machine: str = ANY) -> str:
        return self.machine(machine, "status")

    def events(self, machine: str = ANY) -> str:
        return self.machine(machine, "events")

    def commands(self, machine: str) -> str:
        return self.machine(machine, "commands")

    def sim_tap(self, machine: str) -> str:
        return self.machine(machine, "sim/tap")

    def archived(self, machine: str) -> str:
        return self.machine(machine, "archived")

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(machine, kind) of a topic under `P/machines/`, or None for any other topic."""
        rest = topic.removeprefix(f"{self.prefix}/machines/")
        if rest == topic:
            return None
        machine, _, kind = rest.partition("/")
        return (machine, kind) if machine and kind else None
