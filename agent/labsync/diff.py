"""What a new member list changes against the retained one (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.core.model import Member

FIELDS = ("name", "status", "expires", "roles", "inductions", "badges")


@dataclass
class Diff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # member id -> fields that differ
    # Inductions the new list gives that no machine asks for (a typo, a retired machine);
    # None when no machine has said which induction it asks for.
    unasked: list[str] | None = None

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def shrink_percent(self, before: int) -> float:
        return 100.0 * len(self.removed) / before if before else 0.0

    def lines(self, limit: int = 10) -> list[str]:
        """The diff for a person: counts, and the first `limit` ids of each kind."""
        def some(ids: list[str]) -> str:
            more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
            return ", ".join(ids[:limit]) + more

        out = []
        if self.added:
            out.append(f"added {len(self.added)}: {some(self.added)}")
        if self.removed:
            out.append(f"removed {len(self.removed)}: {some(self.removed)}")
        if self.changed:
            ids = list(self.changed)
            shown = [f"{i} ({', '.join(self.changed[i])})" for i in ids[:limit]]
            out.append(f"changed {len(ids)}: {', '.join(shown)}" + (f" and {len(ids) - limit} more" if len(ids) > limit else ""))
        if self.unasked:
            out.append(f"inductions no machine asks for: {', '.join(self.unasked)}")
        return out or ["no change"]


def diff(before: Iterable[Member], after: Iterable[Member], asked: set[str] | None = None) -> Diff:
    """The members added, removed and changed (and which fields) from `before` to `after`;
    with `asked` (the inductions the machines ask for), the inductions `after` gives that none asks for."""
    old = {m.id: m for m in before}
    new = {m.id: m for m in after}
    result = Diff(added=sorted(new.keys() - old.keys()), removed=sorted(old.keys() - new.keys()))
    for member_id in sorted(old.keys() & new.keys()):
        fields = [f for f in FIELDS if _value(old[member_id], f) != _value(new[member_id], f)]
        if fields:
            result.changed[member_id] = fields
    if asked is not None:
        given = {name for m in new.values() for name in m.inductions}
        result.unasked = sorted(given - asked)
    return result


def _value(member: Member, name: str) -> object:
    value = getattr(member, name)
    return dict(value) if name == "inductions" else value
