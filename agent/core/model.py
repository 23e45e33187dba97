"""The nouns of fabpass: badges, members, machine ids, moments, refusal reasons,
event types and what a member is shown.

Pure data and pure helpers; nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import NamedTuple

# A machine id names its MQTT topics: lowercase letters, digits and dashes.
MACHINE_ID_RULE = "[a-z0-9][a-z0-9-]*"
MACHINE_ID = re.compile(MACHINE_ID_RULE)


def is_machine_id(text: object) -> bool:
    return isinstance(text, str) and MACHINE_ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment as the agent sees it: wall time (aware) for events and dates, the
    monotonic clock for durations and deadlines."""

    wall: dt.datetime
    mono: float

    def local(self, tz: dt.tzinfo | None) -> dt.datetime:
        return self.wall.astimezone(tz)


# ISO 14443 UIDs are 4, 7 or 10 bytes; EM4100 tags are 5 bytes.
BADGE_HEX_LENGTHS = frozenset({8, 10, 14, 20})
_SEPARATORS = re.compile(r"[\s:\-]")
_HEX = re.compile(r"[0-9A-F]+")


class BadBadge(ValueError):
    """A badge string that is not a 4, 5, 7 or 10 byte UID in hex."""


def normalise_badge(text: str) -> str:
    """`04:a1:b2:c3` or `04 A1 B2 C3` -> `04A1B2C3`; anything else raises BadBadge."""
    if isinstance(text, str) and len(text) in BADGE_HEX_LENGTHS and _HEX.fullmatch(text):
        return text  # already normal: the common case in a member list
    if not isinstance(text, str):
        raise BadBadge(f"a badge must be a string, not {type(text).__name__}")
    badge = _SEPARATORS.sub("", text).upper()
    if not _HEX.fullmatch(badge):
        raise BadBadge(f"badge {text!r} is not hexadecimal")
    if len(badge) not in BADGE_HEX_LENGTHS:
        raise BadBadge(
            f"badge {text!r} has {len(badge)} hex digits; expected 8, 10, 14 or 20 "
            "(a 4, 5, 7 or 10 byte UID)"
        )
    return badge


HASHED_BADGE_LENGTH = 64  # HMAC-SHA256 in hex: see agent.members.badgehash
_LIST_BADGE_LENGTHS = BADGE_HEX_LENGTHS | {HASHED_BADGE_LENGTH}


def is_normal_list_badge(text: object) -> bool:
    """Whether `text` is a list badge in normal form: the common case, 200,000 times in a big list."""
    return type(text) is str and len(text) in _LIST_BADGE_LENGTHS and _HEX.fullmatch(text) is not None


# secure cards: a list badge written `uid:HEX` is accepted by its UID alone, without the
# card's authentication (a lab moving over to secure cards badge by badge).
UID_PREFIX = "uid:"


def badge_identity(badge: str) -> str:
    """The card a list badge names, whether or not it is written `uid:`."""
    return badge.removeprefix(UID_PREFIX)


def normalise_list_badge(text: str) -> str:
    """A badge as a member list may carry it: a UID, or the keyed hash of one; either may
    be written `uid:` (secure cards)."""
    if is_normal_list_badge(text):
        return text
    if isinstance(text, str) and text[:len(UID_PREFIX)].lower() == UID_PREFIX:
        badge = normalise_list_badge(text[len(UID_PREFIX):].strip())
        if badge.startswith(UID_PREFIX):
            raise BadBadge(f"{text!r} has two {UID_PREFIX} prefixes")
        return UID_PREFIX + badge
    if isinstance(text, str) and len(text.strip()) == HASHED_BADGE_LENGTH:
        badge = text.strip().upper()
        if _HEX.fullmatch(badge):
            return badge
    return normalise_badge(text)


def badge_from_bytes(uid: bytes) -> str:
    return normalise_badge(uid.hex())


class Reason(str, Enum):
    """Why a tap was refused. Declared in their order of precedence (docs/reference/mqtt.md)."""

    # secure cards: a card that did not prove itself is refused before anything the list says
    CARD_NOT_AUTHENTIC = "card_not_authentic"
    UNKNOWN_BADGE = "unknown_badge"
    STALE_MEMBER_LIST = "stale_member_list"
    SUSPENDED = "suspended"
    MEMBERSHIP_EXPIRED = "membership_expired"
    NOT_INDUCTED = "not_inducted"
    INDUCTION_EXPIRED = "induction_expired"
    MACHINE_LOCKED = "machine_locked"
    OUTSIDE_HOURS = "outside_hours"
    IN_USE = "in_use"
    STORAGE_ERROR = "storage_error"
    CLOCK_UNSYNCHRONISED = "clock_unsynchronised"


class EventType(StrEnum):
    """Every event an agent records (docs/reference/mqtt.md gives their fields)."""

    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"
    SESSION_EXTENDED = "session_extended"
    ACCESS_DENIED = "access_denied"
    MACHINE_LOCKED = "machine_locked"
    MACHINE_UNLOCKED = "machine_unlocked"
    COMMAND_REJECTED = "command_rejected"
    MEMBERS_UPDATED = "members_updated"
    MEMBERS_REJECTED = "members_rejected"
    AGENT_STARTED = "agent_started"
    AGENT_STOPPED = "agent_stopped"
    # Round 2: what a machine grants by itself, its out-of-order button, a shared id.
    BADGE_ENROLLED = "badge_enrolled"
    INDUCTION_GRANTED = "induction_granted"
    OUT_OF_ORDER_REPORTED = "out_of_order_reported"
    MACHINE_ID_CONFLICT = "machine_id_conflict"  # another live agent uses this machine id


class Signal(str, Enum):
    """What the member is told, by LEDs and buzzer on the Pi or on a reader head."""

    GRANTED = "granted"
    REFUSED = "refused"
    ENDED = "ended"
    WARNING = "warning"
    IDLE = "idle"
    OFFLINE = "offline"


class EndReason(str, Enum):
    BADGE_OFF = "badge_off"
    TIMEOUT = "timeout"
    IDLE = "idle"
    REMOTE = "remote"
    STAFF = "staff"
    SHUTDOWN = "shutdown"
    AGENT_RESTART = "agent_restart"


_NO_INDUCTIONS: Mapping[str, dt.date | None] = MappingProxyType({})


class Member(NamedTuple):
    """A member as the list gives it and the policy judges it. Immutable, and a
    NamedTuple rather than a frozen dataclass because a list builds 100,000 of
    them and a dataclass's __init__ sets each field through object.__setattr__
    (docs/performance.md has the cost of each). `inductions` is read-only and
    may be shared."""

    id: str
    name: str
    status: str  # "active" | "suspended"
    expires: dt.date | None = None
    roles: frozenset[str] = frozenset()
    # induction name -> expiry date, or None for no expiry
    inductions: Mapping[str, dt.date | None] = _NO_INDUCTIONS
    badges: tuple[str, ...] = ()

    @property
    def is_staff(self) -> bool:
        return "staff" in self.roles
