"""What a machine granted by itself: badges enrolled and inductions given at the machine.

A grant is in force on its machine at once, and stays so until a member list
generated after it arrives; from then on the list decides (the lab's sync
merges grants into the list it publishes). Pure data: the session machine
makes and retires grants, the daemon keeps them in its storage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from agent.core.model import Member
from agent.core.timespec import parse_rfc3339, rfc3339


@dataclass(frozen=True, slots=True)
class BadgeGrant:
    """A badge bound to a member by `members enrol`; `by` is the command's `by`."""

    badge: str
    member_id: str
    by: str
    ts: dt.datetime


@dataclass(frozen=True, slots=True)
class InductionGrant:
    """An induction given by a trainer (`by`) during their session."""

    member_id: str
    induction: str
    by: str
    expires: dt.date | None
    ts: dt.datetime


def _later(a: dt.date | None, b: dt.date | None) -> dt.date | None:
    """The later of two expiry dates, where None (no expiry) is the latest."""
    return None if a is None or b is None else max(a, b)


_NONE: Mapping = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Grants:
    """The grants in force. `list_version` is the member list they were last held
    against: a list of another version decides which of them remain."""

    badges: Mapping[str, BadgeGrant] = field(default_factory=lambda: _NONE)
    inductions: Mapping[tuple[str, str], InductionGrant] = field(default_factory=lambda: _NONE)
    list_version: int | None = None

    def __bool__(self) -> bool:
        return bool(self.badges or self.inductions)

    def member_id(self, badge: str) -> str | None:
        """The member an enrolled badge belongs to, or None."""
        grant = self.badges.get(badge)
        return grant.member_id if grant else None

    def overlay(self, member: Member | None) -> Member | None:
        """`member` with the inductions given here added (never shortening what the list gives)."""
        if member is None or not self.inductions:
            return member
        given = {induction: g.expires for (member_id, induction), g in self.inductions.items()
                 if member_id == member.id}
        if not given:
            return member
        merged = dict(member.inductions)
        for induction, expires in given.items():
            merged[induction] = _later(merged[induction], expires) if induction in merged else expires
        return member._replace(inductions=MappingProxyType(merged))

    def with_badge(self, grant: BadgeGrant) -> Grants:
        return replace(self, badges=MappingProxyType({**self.badges, grant.badge: grant}))

    def with_induction(self, grant: InductionGrant) -> Grants:
        key = (grant.member_id, grant.induction)
        return replace(self, inductions=MappingProxyType({**self.inductions, key: grant}))

    def held_against(self, version: int | None, generated: dt.datetime) -> Grants:
        """The grants that remain once list `version`, generated at `generated`, is in
        force: those made after it. The same version again changes nothing."""
        if version == self.list_version:
            return self
        return Grants(MappingProxyType({k: g for k, g in self.badges.items() if g.ts > generated}),
                      MappingProxyType({k: g for k, g in self.inductions.items() if g.ts > generated}),
                      version)

    def to_json(self) -> dict[str, Any]:
        """As the agent stores them; each grant has the fields of its event, and `ts`."""
        return {
            "list_version": self.list_version,
            "badges": [{"badge": g.badge, "member_id": g.member_id, "by": g.by, "ts": rfc3339(g.ts)}
                       for g in self.badges.values()],
            "inductions": [{"member_id": g.member_id, "induction": g.induction, "by": g.by,
                            "expires": g.expires.isoformat() if g.expires else None, "ts": rfc3339(g.ts)}
                           for g in self.inductions.values()],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> Grants:
        if not obj:
            return cls()
        grants = cls(list_version=obj.get("list_version"))
        for g in obj.get("badges", ()):
            grants = grants.with_badge(BadgeGrant(g["badge"], g["member_id"], g["by"], parse_rfc3339(g["ts"])))
        for g in obj.get("inductions", ()):
            expires = dt.date.fromisoformat(g["expires"]) if g["expires"] else None
            grants = grants.with_induction(InductionGrant(g["member_id"], g["induction"], g["by"], expires,
                                                          parse_rfc3339(g["ts"])))
        return grants
