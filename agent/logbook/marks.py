"""The archived marks the collector publishes, one retained message per machine (pure).

`P/machines/ID/archived` says: every event of `incarnation` up to `seq` is in
the archive. A machine whose id two live agents share, or whose SD card was
replaced, has several incarnations: `marks` then maps each one seen within
`keep` to its seq, and an agent reads its own from there. `resend: true` asks
the machine's agents to send again everything past their mark at once: the
logbook says so when it has never heard of an incarnation (it was started
after the machines) and when the broker did not keep its queue (a restart
without persistence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class _Mark:
    seq: int
    updated: float  # Unix time of the last change


class MarkBook:
    """Every (machine, incarnation) mark the collector knows, and which machines' are due."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._marks: dict[str, dict[str, _Mark]] = {}
        self._due: dict[str, bool] = {}  # machine -> whether its next message asks for a resend

    def knows(self, machine: str, incarnation: str) -> bool:
        return incarnation in self._marks.get(machine, {})

    def incarnations(self, machine: str) -> list[str]:
        return sorted(self._marks.get(machine, {}))

    def set(self, machine: str, incarnation: str, seq: int, now: float, resend: bool = False) -> None:
        """The mark of (machine, incarnation) is `seq`; due for publishing when it changed."""
        known = self._marks.setdefault(machine, {})
        mark = known.get(incarnation)
        if mark is None or mark.seq != seq:
            known[incarnation] = _Mark(seq, now)
            self._due[machine] = self._due.get(machine, False) or resend
        elif resend:
            self._due[machine] = True

    def load(self, machine: str, incarnation: str, seq: int, updated: float) -> None:
        """A mark from the database, as it was last published."""
        self._marks.setdefault(machine, {})[incarnation] = _Mark(seq, updated)

    def all_due(self, resend: bool = False) -> None:
        """Every machine's mark, again (at a connection: what was due before a crash is too)."""
        for machine in self._marks:
            self._due[machine] = self._due.get(machine, False) or resend

    def nudge(self, machine: str) -> None:
        """This machine's mark again: an agent sent what the mark covers, so it has not seen it."""
        if machine in self._marks:
            self._due.setdefault(machine, False)

    def take_due(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """(machine, payload) for every machine whose mark is due, and none is due after."""
        due, self._due = self._due, {}
        return [(machine, self.payload(machine, now, resend)) for machine, resend in sorted(due.items())]

    def payload(self, machine: str, now: float, resend: bool = False) -> dict[str, Any]:
        known = self._marks[machine]
        latest = max(known, key=lambda incarnation: known[incarnation].updated)
        message: dict[str, Any] = {"v": 1, "machine": machine, "incarnation": latest, "seq": known[latest].seq}
        recent = {incarnation: mark.seq for incarnation, mark in sorted(known.items())
                  if now - mark.updated <= self.keep_s or incarnation == latest}
        if len(recent) > 1:
            message["marks"] = recent
        if resend:
            message["resend"] = True
        return message
