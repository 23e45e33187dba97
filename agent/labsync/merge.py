"""Merging what machines granted into the members the lab's source gives (pure).

A grant (from agent.logbook.grants) is *held* when the source already has it:
the member holds that badge, or that induction with no expiry or one at least
as late. A held grant is settled. Any other grant is merged into the member,
unless the source has no such member or gives that badge to someone else:
then it is skipped, and stays pending for the admin to resolve.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from agent.core.model import BadBadge, normalise_list_badge

Row = tuple[str, dict[str, Any]]  # (place, member in its JSON shape)


@dataclass
class Merged:
    rows: list[Row]
    held: list[str] = field(default_factory=list)  # event ids the source already holds
    merged: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"merged {g['kind']} {g['value']} for {g['member_id']} (granted on {g['machine']})"
               for g in self.merged]
        out += [f"not merged: {g['kind']} {g['value']} for {g['member_id']} (granted on {g['machine']}): {why}"
                for g, why in self.skipped]
        if self.held:
            out.append(f"{len(self.held)} machine-made change(s) now in the source: no longer pending")
        return out


def _badge(text: Any) -> str | None:
    try:
        return normalise_list_badge(text)
    except BadBadge:
        return None


def _holds_induction(current: Any, granted: str | None) -> bool:
    """Whether an induction valid through `current` (None: no expiry) covers one through `granted`."""
    return current is None or (granted is not None and str(current) >= granted)


def _owners(rows: list[Row]) -> dict[str, Any]:
    return {badge: member.get("id") for _, member in rows for b in member.get("badges") or []
            if (badge := _badge(b))}


def merge(rows: list[Row], grants: list[dict[str, Any]]) -> Merged:
    """`rows` with `grants` merged in; the rows given are not changed. Whether the
    source holds a grant is judged on `rows` as given, not on what earlier grants added."""
    source = {member.get("id"): member for _, member in rows}
    source_owners = _owners(rows)
    out = [(place, copy.deepcopy(member)) for place, member in rows]
    working = {member.get("id"): member for _, member in out}
    owners = dict(source_owners)
    result = Merged(out)
    for grant in grants:
        member_id = grant["member_id"]
        member = working.get(member_id)
        if grant["kind"] == "badge":
            badge = _badge(grant["value"])
            if badge is not None and source_owners.get(badge) == member_id:
                result.held.append(grant["event_id"])
            elif member is None:
                result.skipped.append((grant, "the source has no such member"))
            elif badge is None or owners.get(badge, member_id) != member_id:
                result.skipped.append((grant, f"the source gives that badge to {owners[badge]}" if badge
                                       else "not a badge"))
            else:
                if badge not in owners:
                    member.setdefault("badges", []).append(badge)
                    owners[badge] = member_id
                result.merged.append(grant)
            continue
        name, expires = grant["value"], grant["expires"]
        held = (source.get(member_id) or {}).get("inductions") or {}
        if name in held and _holds_induction(held[name], expires):
            result.held.append(grant["event_id"])
        elif member is None:
            result.skipped.append((grant, "the source has no such member"))
        else:
            inductions = member.setdefault("inductions", {})
            if not (name in inductions and _holds_induction(inductions[name], expires)):
                inductions[name] = expires
            result.merged.append(grant)
    return result
