"""A generated lab (pure, from a seeded random.Random): machines and a member list.

A realistic mix, so taps are granted and refused for every common reason:
members inducted on one to three machine kinds (some inductions expired),
a few staff, some suspended, some whose membership has lapsed, and badges
nobody knows.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

INDUCTIONS = ("laser", "cnc", "printer", "vinyl", "mill")
# (kind, weight) of the members generated
KINDS = (("regular", 70), ("staff", 5), ("suspended", 8), ("lapsed", 7), ("unknown", 10))


@dataclass(frozen=True)
class Machine:
    id: str
    induction: str


@dataclass(frozen=True)
class Tapper:
    """Someone with a badge: a listed member, or a stranger (`member_id` None)."""

    badge: str
    member_id: str | None
    kind: str
    held: frozenset[str] = frozenset()  # inductions on the list
    expired: frozenset[str] = frozenset()  # of those, the ones past their date

    @property
    def staff(self) -> bool:
        return self.kind == "staff"

    @property
    def valid(self) -> frozenset[str]:
        return self.held - self.expired


def machines(count: int) -> list[Machine]:
    """sim-01, sim-02, … each needing one of INDUCTIONS in turn."""
    width = max(2, len(str(count)))
    return [Machine(f"sim-{i:0{width}d}", INDUCTIONS[(i - 1) % len(INDUCTIONS)]) for i in range(1, count + 1)]


def _badge(rng: random.Random, taken: set[str]) -> str:
    while True:
        badge = f"{rng.getrandbits(32):08X}"
        if badge not in taken:
            taken.add(badge)
            return badge


def population(rng: random.Random, count: int) -> list[Tapper]:
    """`count` tappers of the KINDS mix (at least one of each)."""
    kinds = [k for k, _ in KINDS] + rng.choices([k for k, _ in KINDS], [w for _, w in KINDS],
                                                k=max(0, count - len(KINDS)))
    taken: set[str] = set()
    tappers = []
    for number, kind in enumerate(kinds, 1):
        if kind == "unknown":
            tappers.append(Tapper(_badge(rng, taken), None, kind))
            continue
        held = INDUCTIONS if kind == "staff" else rng.sample(INDUCTIONS, rng.randint(1, 3))
        expired = {held[0]} if kind == "regular" and rng.random() < 0.15 else set()
        tappers.append(Tapper(_badge(rng, taken), f"m-{number:04d}", kind, frozenset(held), frozenset(expired)))
    return tappers


def member_list(tappers: list[Tapper], version: int, today: dt.date, generated_at: str) -> dict[str, Any]:
    """The member list (documented JSON) for the listed tappers (strangers are left out)."""
    future, past = (today + dt.timedelta(days=365)).isoformat(), (today - dt.timedelta(days=30)).isoformat()
    members = []
    for t in tappers:
        if t.member_id is None:
            continue
        inductions = {name: past if name in t.expired else (future if t.staff else None)
                      for name in sorted(t.held)}
        members.append({
            "id": t.member_id, "name": f"Member {t.member_id}", "badges": [t.badge],
            "status": "suspended" if t.kind == "suspended" else "active",
            "expires": past if t.kind == "lapsed" else future,
            "roles": ["staff"] if t.staff else [],
            "inductions": inductions,
        })
    return {"v": 1, "version": version, "generated_at": generated_at, "members": members}
