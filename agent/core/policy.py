"""May this member use this machine now?  A pure function: no I/O, `now` passed in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent.core.hours import OpeningHours
from agent.core.model import Member, Reason


@dataclass(frozen=True, slots=True)
class Rules:
    """What the machine's config says about access."""

    induction: str
    hours: OpeningHours | None = None


@dataclass(frozen=True, slots=True)
class Situation:
    """What the machine and its list are doing at the moment of a tap."""

    locked: bool = False
    in_use_by_other: bool = False
    list_stale: bool = False
    clock_trusted: bool = True  # False until the system clock is synchronised
    card_authentic: bool = True  # secure cards: False when the card failed its authentication


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: Reason | None = None

    @classmethod
    def refuse(cls, reason: Reason) -> Decision:
        return cls(False, reason)


GRANT = Decision(True)


def _expired(until: dt.date | None, today: dt.date) -> bool:
    """Dates are valid through the end of that day."""
    return until is not None and today > until


def decide(member: Member | None, rules: Rules, situation: Situation, now: dt.datetime) -> Decision:
    """The first refusal in the documented order, or a grant.

    `now` is the machine's local time: expiry dates and opening hours are read
    in it. Staff may use a locked machine, outside opening hours, and with a
    stale list; they still need an active membership and the induction.
    While the clock is not trusted, a rule that depends on the date (an expiry,
    opening hours) refuses with clock_unsynchronised where it applies, so a
    clock that is behind never grants what the right time would refuse.
    """
    refusal = _membership(member, situation, now.date())
    if refusal is not None:
        return refusal
    assert member is not None
    staff, today = member.is_staff, now.date()
    if rules.induction not in member.inductions:
        return Decision.refuse(Reason.NOT_INDUCTED)
    induction_until = member.inductions[rules.induction]
    if induction_until is not None and not situation.clock_trusted:
        return Decision.refuse(Reason.CLOCK_UNSYNCHRONISED)
    if _expired(induction_until, today):
        return Decision.refuse(Reason.INDUCTION_EXPIRED)
    if situation.locked and not staff:
        return Decision.refuse(Reason.MACHINE_LOCKED)
    if rules.hours is not None and not staff:
        if not situation.clock_trusted:
            return Decision.refuse(Reason.CLOCK_UNSYNCHRONISED)
        if not rules.hours.is_open(now):
            return Decision.refuse(Reason.OUTSIDE_HOURS)
    if situation.in_use_by_other:
        return Decision.refuse(Reason.IN_USE)
    return GRANT


def may_end_others(member: Member | None, situation: Situation, now: dt.datetime) -> Decision:
    """Staff may end anyone's session, inducted on this machine or not, while their
    own membership is in force."""
    refusal = _membership(member, situation, now.date())
    if refusal is not None:
        return refusal
    assert member is not None
    return GRANT if member.is_staff else Decision.refuse(Reason.IN_USE)


def may_train(trainer: Member, induction: str, situation: Situation, now: dt.datetime) -> Decision:
    """May `trainer` give `induction` to others now: they train it (else not_inducted), and
    their own membership holds, judged as any tap of theirs would be (else its refusal)."""
    if not trainer.trains(induction):
        return Decision.refuse(Reason.NOT_INDUCTED)
    return _membership(trainer, situation, now.date()) or GRANT


def _membership(member: Member | None, situation: Situation, today: dt.date) -> Decision | None:
    """The refusals about the member alone, before anything about the machine."""
    if not situation.card_authentic:
        return Decision.refuse(Reason.CARD_NOT_AUTHENTIC)
    if member is None:
        return Decision.refuse(Reason.UNKNOWN_BADGE)
    if situation.list_stale and not member.is_staff:
        return Decision.refuse(Reason.STALE_MEMBER_LIST)
    if member.status != "active":
        return Decision.refuse(Reason.SUSPENDED)
    if member.expires is not None and not situation.clock_trusted:
        return Decision.refuse(Reason.CLOCK_UNSYNCHRONISED)
    if _expired(member.expires, today):
        return Decision.refuse(Reason.MEMBERSHIP_EXPIRED)
    return None
