"""The fleet's consistency check (pure): what the logbook holds against what the agents made.

Each incarnation of each agent (a storage: a wiped card is a new one) numbers
its events 1, 2, 3… (`seq`, never reused), so what it made is the range
1..last_seq, read from its outbox at the end. Against it the archive must hold
every (machine, incarnation, seq) (else *lost*), each event_id once (else
*duplicated*), each name under one event_id, also as seen on the wire (else
*conflicting*), and nothing else (*unexpected*). Beyond the events: no session
left open, no relay on without a session (or off during one), and every
scenario of a chaos run doing what it should (two agents sharing an id each
noticed the other).

With chaos, each problem is put next to the scenarios that were under way
around the moment its event was made, so that a failed run says which one
broke it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str, int]  # (machine, incarnation, seq)
Row = tuple[str, str, int, str]  # (machine, incarnation, seq, event_id)
Made = Mapping[tuple[str, str], int]  # (machine, incarnation) -> last_seq


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
class Happening:
    """A chaos scenario as it ran: from `start_s` to `end_s` into the run."""

    scenario: str  # kill_agent, kill_logbook, broker_forgets, wipe_storage, twin, late_logbook
    machine: str | None
    start_s: float
    end_s: float
    detail: str = ""
    failure: str | None = None  # what the scenario itself saw go wrong

    def __str__(self) -> str:
        where = f" {self.machine}" if self.machine else ""
        return f"{self.scenario}{where} at {self.start_s:.1f} s" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "machine": self.machine, "start_s": round(self.start_s, 1),
                "end_s": round(self.end_s, 1), "detail": self.detail, "failure": self.failure}


@dataclass(frozen=True)
class Consistency:
    events_sent: int
    events_archived: int
    incarnations: int = 0
    lost: list[Key] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)  # event_ids archived more than once
    conflicting: list[Key] = field(default_factory=list)  # a name under two event_ids
    unexpected: list[Key] = field(default_factory=list)  # archived, never made
    open_sessions: list[tuple[str, str]] = field(default_factory=list)  # (machine, member_id)
    relay_faults: list[RelayFault] = field(default_factory=list)
    scenario_failures: list[str] = field(default_factory=list)
    blame: dict[str, list[str]] = field(default_factory=dict)  # a problem -> the scenarios around it

    @property
    def consistent(self) -> bool:
        return not (self.lost or self.duplicated or self.conflicting or self.unexpected
                    or self.open_sessions or self.relay_faults or self.scenario_failures)

    def problems(self, limit: int = 10) -> list[str]:
        """Human sentences for the first `limit` problems of each kind, each with its scenarios."""
        out = [_sentence("lost", k) for k in self.lost[:limit]]
        out += [f"duplicated: event {e} archived more than once" for e in self.duplicated[:limit]]
        out += [_sentence("conflicting", k) for k in self.conflicting[:limit]]
        out += [_sentence("unexpected", k) for k in self.unexpected[:limit]]
        out += [f"open session: {m} ({member})" for m, member in self.open_sessions[:limit]]
        out += [str(f) for f in self.relay_faults[:limit]]
        out += self.scenario_failures[:limit]
        return [f"{p}; during {', '.join(self.blame[p])}" if self.blame.get(p) else p for p in out]

    def as_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "events_sent": self.events_sent,
            "events_archived": self.events_archived,
            "incarnations": self.incarnations,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "conflicting": len(self.conflicting),
            "unexpected": len(self.unexpected),
            "sessions_open": len(self.open_sessions),
            "relay_faults": len(self.relay_faults),
            "scenario_failures": len(self.scenario_failures),
            "problems": self.problems(),
        }


def check(made: Made, archived: Iterable[Row], observed: Iterable[Row] = (),
          open_sessions: Iterable[tuple[str, str]] = (), relay_faults: Iterable[RelayFault] = (),
          happenings: Iterable[Happening] = (), made_at: Mapping[Key, float] | None = None) -> Consistency:
    """Compare the archive (`archived` rows) with what each incarnation made.

    `observed` are rows seen elsewhere (a subscriber on the events topic): they
    count only towards conflicts, as a redelivery is normal for QoS 1.
    `made_at` gives, for some events, when (seconds into the run) they were made:
    a problem is blamed on the happenings under way within BLAME_S of it (or,
    for a machine's own scenario, of its events' neighbours).
    """
    archived = list(archived)
    happenings = list(happenings)
    ids_by_key: dict[Key, set[str]] = defaultdict(set)
    for machine, incarnation, seq, event_id in [*archived, *observed]:
        ids_by_key[machine, incarnation, seq].add(event_id)
    archived_keys = {(m, i, s) for m, i, s, _ in archived}
    lost = [(m, i, s) for (m, i), last in sorted(made.items()) for s in range(1, last + 1)
            if (m, i, s) not in archived_keys]
    unexpected = sorted(k for k in archived_keys if not 1 <= k[2] <= made.get(k[:2], 0))
    counts = Counter(event_id for *_, event_id in archived)
    result = Consistency(
        events_sent=sum(made.values()),
        events_archived=len(archived),
        incarnations=len(made),
        lost=lost,
        duplicated=sorted(e for e, n in counts.items() if n > 1),
        conflicting=sorted(k for k, ids in ids_by_key.items() if len(ids) > 1),
        unexpected=unexpected,
        open_sessions=sorted(open_sessions),
        relay_faults=list(relay_faults),
        scenario_failures=[f"{h}: {h.failure}" for h in happenings if h.failure],
    )
    if happenings:
        result.blame.update(_blame(result, happenings, made_at or {}))
    return result


BLAME_S = 10.0  # a scenario is suspected for problems with events made this close to it
_SAYS = {"lost": "lost: {}", "conflicting": "conflicting: {} under two event_ids",
         "unexpected": "unexpected: {} archived but never made"}


def _sentence(kind: str, key: Key) -> str:
    machine, incarnation, seq = key
    return _SAYS[kind].format(f"{machine} seq {seq}" + (f" (incarnation {incarnation})" if incarnation else ""))


def _blame(result: Consistency, happenings: list[Happening], made_at: Mapping[Key, float]) -> dict[str, list[str]]:
    """Each event problem's sentence -> the happenings that were under way around it."""
    by_incarnation: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for (machine, incarnation, seq), at in made_at.items():
        by_incarnation[machine, incarnation].append((seq, at))

    def when(key: Key) -> tuple[float, float] | None:
        """When the event was made: between its known neighbours (or at the one there is)."""
        known = by_incarnation.get(key[:2], [])
        before = [at for seq, at in known if seq <= key[2]]
        after = [at for seq, at in known if seq >= key[2]]
        if not known:
            return None
        lo = max(before) if before else min(after)
        return lo, min(after) if after else lo

    blamed: dict[str, list[str]] = {}
    for kind in ("lost", "conflicting", "unexpected"):
        for key in getattr(result, kind):
            span = when(key)
            suspects = [str(h) for h in happenings if h.machine == key[0]
                        or (span is not None and h.start_s - BLAME_S <= span[1] and span[0] <= h.end_s + BLAME_S)]
            if suspects:
                blamed[_sentence(kind, key)] = suspects
    return blamed
