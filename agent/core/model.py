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
    if type(text) is not str:
        return False
    if len(text) in _LIST_BADGE_LENGTHS:
        return _HEX.fullmatch(text) is not None
    return text.startswith(EM_PREFIX) and _EM_NORMAL.fullmatch(text) is not None and _em_in_range(text)


# secure cards: a list badge written `uid:HEX` is accepted by its UID alone, without the
# card's authentication (a lab moving over to secure cards badge by badge).
UID_PREFIX = "uid:"


def badge_identity(badge: str) -> str:
    """The card a list badge names, whether or not it is written `uid:`."""
    return badge.removeprefix(UID_PREFIX)


def normalise_list_badge(text: str) -> str:
    """A badge as a member list may carry it: a UID (`hex:` may say so), the keyed hash of
    one, or an EM4100 card's printed number (`em:`); any of them may be written `uid:`
    (secure cards)."""
    if is_normal_list_badge(text):
        return text
    if isinstance(text, str) and text[:len(UID_PREFIX)].lower() == UID_PREFIX:
        badge = normalise_list_badge(text[len(UID_PREFIX):].strip())
        if badge.startswith(UID_PREFIX):
            raise BadBadge(f"{text!r} has two {UID_PREFIX} prefixes")
        return UID_PREFIX + badge
    if isinstance(text, str):
        stripped = text.strip()
        prefix = stripped[:len(HEX_PREFIX)].lower()
        if prefix.startswith(EM_PREFIX):
            return normalise_em(stripped)
        if prefix == HEX_PREFIX:
            return normalise_badge(stripped[len(HEX_PREFIX):])
        if len(stripped) == HASHED_BADGE_LENGTH and _HEX.fullmatch(stripped.upper()):
            return stripped.upper()
    return normalise_badge(text)


def badge_from_bytes(uid: bytes) -> str:
    return normalise_badge(uid.hex())


# -- at the machine: the numbers printed on EM4100 cards ---------------------------------------
# A 125 kHz EM4100 tag holds 5 bytes: a version (customer) byte and 32 data bits. Cards
# print the data bits in decimal, 10 digits ("DEZ10"), or bits 16-23 and 0-15 as a
# facility code and card number (as a Wiegand-26 reader sends them). A list may give
# either, as `em:0004567890` or `em:069,45906`; such a badge matches every 5-byte read
# whose bits agree, whatever its first byte. `hex:` says a badge is hex.
EM_PREFIX, HEX_PREFIX = "em:", "hex:"
EM_READ_LENGTH = 10  # hex digits of a 5-byte EM4100 read
_EM_NORMAL = re.compile(r"em:(?:[0-9]{10}|[0-9]{3},[0-9]{5})")
_EM_DEZ10 = re.compile(r"[0-9]{1,10}")  # [0-9], not \d: no other script's digits
_EM_PAIR = re.compile(r"([0-9]{1,3}),([0-9]{1,5})")


def em_dez10(low32: int) -> str:
    """The list badge of a tag's low 32 bits: em:0004567890."""
    return f"{EM_PREFIX}{low32:010d}"


def em_pair(low24: int) -> str:
    """The list badge of a tag's facility code (bits 16-23) and card number (bits 0-15): em:069,46930."""
    return f"{EM_PREFIX}{low24 >> 16:03d},{low24 & 0xFFFF:05d}"


def em_bits(badge: str) -> tuple[int, int] | None:
    """(value, how many low bits it fixes: 32 or 24) of a normal em: badge; None for any other badge."""
    if not badge.startswith(EM_PREFIX):
        return None
    digits = badge[len(EM_PREFIX):]
    if "," in digits:
        facility, card = digits.split(",")
        return int(facility) << 16 | int(card), 24
    return int(digits), 32


def _em_in_range(badge: str) -> bool:
    if "," in badge:
        return int(badge[3:6]) <= 0xFF and int(badge[7:]) <= 0xFFFF
    return int(badge[3:]) <= 0xFFFFFFFF


def normalise_em(text: str) -> str:
    """`em:4567890` -> `em:0004567890`, `EM:69,46930` -> `em:069,46930`; anything else raises BadBadge."""
    digits = text.strip()[len(EM_PREFIX):]
    pair = _EM_PAIR.fullmatch(digits)
    if pair:
        facility, card = int(pair.group(1)), int(pair.group(2))
        if facility > 0xFF or card > 0xFFFF:
            raise BadBadge(f"badge {text!r}: an EM4100 facility code is 0-255 and a card number 0-65535")
        return em_pair(facility << 16 | card)
    if _EM_DEZ10.fullmatch(digits):
        value = int(digits)
        if value > 0xFFFFFFFF:
            raise BadBadge(f"badge {text!r}: the 10-digit number printed on an EM4100 card is at most 4294967295")
        return em_dez10(value)
    raise BadBadge(f"badge {text!r} is not an EM4100 number: write em:DDDDDDDDDD (the 10 digits printed "
                   "on the card) or em:FFF,CCCCC (facility code, card number)")


def printed_numbers(badge: str) -> tuple[str, ...]:
    """The list badges that a read of `badge` (normalised) matches besides itself: for a
    5-byte EM4100 read, the numbers printed on the card; none for any other read."""
    if len(badge) != EM_READ_LENGTH:
        return ()
    value = int(badge, 16)
    return em_dez10(value & 0xFFFFFFFF), em_pair(value & 0xFFFFFF)


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
    # at the machine
    ENROLMENT_REFUSED = "enrolment_refused"
    BYPASS_ON = "bypass_on"
    BYPASS_OFF = "bypass_off"


class Signal(str, Enum):
    """What the member is told, by LEDs and buzzer on the Pi or on a reader head."""

    GRANTED = "granted"
    REFUSED = "refused"
    ENDED = "ended"
    WARNING = "warning"
    IDLE = "idle"
    OFFLINE = "offline"
    # at the machine
    ENROLLED = "enrolled"
    INDUCTED = "inducted"
    OUT_OF_ORDER = "out_of_order"


class EndReason(str, Enum):
    BADGE_OFF = "badge_off"
    TIMEOUT = "timeout"
    IDLE = "idle"
    REMOTE = "remote"
    STAFF = "staff"
    SHUTDOWN = "shutdown"
    AGENT_RESTART = "agent_restart"
    # at the machine
    OUT_OF_ORDER = "out_of_order"


# -- at the machine ------------------------------------------------------------------------------

class EnrolRefusal(str, Enum):
    """Why an enrolment bound no badge (`enrolment_refused`)."""

    UNKNOWN_MEMBER = "unknown_member"  # the list has no such member
    BADGE_KNOWN = "badge_known"  # the badge tapped already belongs to a member
    WINDOW_CLOSED = "window_closed"  # no unknown badge was tapped in time


TRAINER_ROLE = "trainer:"  # trainer:laser gives the laser induction to others, at the machine


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

    def trains(self, induction: str) -> bool:
        """Whether this member may give `induction` to others (role trainer:INDUCTION)."""
        return TRAINER_ROLE + induction in self.roles
