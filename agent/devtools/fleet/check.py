"""The fleet's consistency check (pure): what the logbook holds against what the agents sent.

Each agent numbers its events 1, 2, 3… (`seq`, never reused) and deletes
them from its outbox once acknowledged, so what an agent sent is the range
1..last_seq. Against it the archive must hold every seq (else *lost*), each
event_id once (else *duplicated*), each seq under one event_id, also as seen
on the wire (else *conflicting*), and nothing else (*unexpected*). Beyond the
events: no session left open, no relay on without a session (or off during
one), and every outbox empty.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = tuple[str, int, str]  # (machine, seq, event_id)


@dataclass(frozen=True)
class RelayFault:
    machine: str
    relay_on: bool
    in_session: bool
    when: str  # "after a tap", "sweep", "after stop"

    def __str__(self) -> str:
        what = "on without a session" if self.relay_on else "off during a session"
        return f"{self.machine}: relay {what} ({self.when})"


@dataclass(frozen=True)
class Consistency:
    events_sent: int
    events_archived: int
    lost: list[tuple[str, int]] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)  # event_ids archived more than once
    conflicting: list[tuple[str, int]] = field(default_factory=list)  # a seq under two event_ids
    unexpected: list[tuple[str, int]] = field(default_factory=list)  # archived, never sent
    open_sessions: list[tuple[str, str]] = field(default_factory=list)  # (machine, member_id)
    relay_faults: list[RelayFault] = field(default_factory=list)
    outbox_left: dict[str, int] = field(default_factory=dict)  # machine -> events not delivered

    @property
    def consistent(self) -> bool:
        return not (self.lost or self.duplicated or self.conflicting or self.unexpected
                    or self.open_sessions or self.relay_faults or self.outbox_left)

    def problems(self, limit: int = 10) -> list[str]:
        """Human sentences for the first `limit` problems of each kind."""
        out = [f"lost: {m} seq {s}" for m, s in self.lost[:limit]]
        out += [f"duplicated: event {e} archived more than once" for e in self.duplicated[:limit]]
        out += [f"conflicting: {m} seq {s} under two event_ids" for m, s in self.conflicting[:limit]]
        out += [f"unexpected: {m} seq {s} archived but never sent" for m, s in self.unexpected[:limit]]
        out += [f"open session: {m} ({member})" for m, member in self.open_sessions[:limit]]
        out += [str(f) for f in self.relay_faults[:limit]]
        out += [f"outbox not empty: {m} ({n} events)" for m, n in list(self.outbox_left.items())[:limit]]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "events_sent": self.events_sent,
            "events_archived": self.events_archived,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "conflicting": len(self.conflicting),
            "unexpected": len(self.unexpected),
            "sessions_open": len(self.open_sessions),
            "relay_faults": len(self.relay_faults),
            "outbox_left": sum(self.outbox_left.values()),
            "problems": self.problems(),
        }


def check(last_seq: Mapping[str, int], archived: Iterable[Row], observed: Iterable[Row] = (),
          open_sessions: Iterable[tuple[str, str]] = (), relay_faults: Iterable[RelayFault] = (),
          outbox_left: Mapping[str, int] | None = None) -> Consistency:
    """Compare the archive (`archived` rows) with each machine's `last_seq`.

    `observed` are rows seen elsewhere (a subscriber on the events topic):
    they count only towards conflicts, as a redelivery is normal for QoS 1.
    """
    archived = list(archived)
    ids_by_key: dict[tuple[str, int], set[str]] = defaultdict(set)
    for machine, seq, event_id in [*archived, *observed]:
        ids_by_key[machine, seq].add(event_id)
    archived_keys = {(machine, seq) for machine, seq, _ in archived}
    lost = [(m, s) for m, last in sorted(last_seq.items()) for s in range(1, last + 1)
            if (m, s) not in archived_keys]
    unexpected = sorted((m, s) for m, s in archived_keys if not 1 <= s <= last_seq.get(m, 0))
    counts = Counter(event_id for _, _, event_id in archived)
    return Consistency(
        events_sent=sum(last_seq.values()),
        events_archived=len(archived),
        lost=lost,
        duplicated=sorted(e for e, n in counts.items() if n > 1),
        conflicting=sorted(k for k, ids in ids_by_key.items() if len(ids) > 1),
        unexpected=unexpected,
        open_sessions=sorted(open_sessions),
        relay_faults=list(relay_faults),
        outbox_left={m: n for m, n in sorted((outbox_left or {}).items()) if n},
    )
