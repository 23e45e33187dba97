"""Validating what arrives on MQTT before it is archived (pure).

Every field of every event type the agents document (docs/reference/mqtt.md)
is checked for its type, range and length; whatever fails is refused with a
MalformedEvent that says which field and why, and the collector quarantines
it. Event types this logbook does not know yet (a newer agent's) are archived
with their common fields checked, and any `member_id`, `badge` or `reason`
they carry checked as the known types' are, so that nothing an agent of any
version may send can break a query, a report or the web view.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from typing import Any

from agent.core.model import EventType, is_machine_id
from agent.core.timespec import parse_rfc3339, rfc3339

SESSION_TYPES = (EventType.SESSION_STARTED, EventType.SESSION_ENDED)

MAX_PAYLOAD = 64 * 1024  # an event is a few hundred bytes
MAX_SEQ = 2**62  # seq and versions stay far inside SQLite's 64-bit integers
MAX_DURATION_S = 366 * 86400  # a session of more than a year is not one
# A Pi without a real-time clock starts in 1970; a clock far ahead is still archived.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,63}")  # event types and reasons
_INCARNATION = re.compile(r"[A-Za-z0-9_-]{0,64}")


class MalformedEvent(ValueError):
    """A payload that is not what its topic carries; the message says what is wrong with it."""


Check = Callable[[Any], bool]


def _text(longest: int, empty: bool = True) -> Check:
    return lambda v: isinstance(v, str) and len(v) <= longest and (empty or bool(v))


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _identifier(v: Any) -> bool:
    return isinstance(v, str) and _IDENTIFIER.fullmatch(v) is not None


def _integer(lowest: int, highest: int = MAX_SEQ) -> Check:
    return lambda v: type(v) is int and lowest <= v <= highest


def _seconds(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and 0 <= v <= MAX_DURATION_S


def _boolean(v: Any) -> bool:
    return type(v) is bool


MEMBER_ID, BADGE = _text(1000, empty=False), _text(256, empty=False)
SAYS = {  # what each check asks for, for the error
    MEMBER_ID: "a non-empty string of at most 1000 characters",
    BADGE: "a non-empty string of at most 256 characters",
}
# Fields each type carries beyond the common ones: name -> (check, required, what it must be).
_R, _O = True, False
FIELDS: dict[str, dict[str, tuple[Check, bool, str]]] = {
    EventType.SESSION_STARTED: {"member_id": (MEMBER_ID, _R, SAYS[MEMBER_ID]), "badge": (BADGE, _R, SAYS[BADGE])},
    EventType.SESSION_EXTENDED: {"member_id": (MEMBER_ID, _R, SAYS[MEMBER_ID]), "badge": (BADGE, _R, SAYS[BADGE])},
    EventType.SESSION_ENDED: {
        "member_id": (MEMBER_ID, _R, SAYS[MEMBER_ID]),
        "duration_s": (_seconds, _R, f"a number of seconds from 0 to {MAX_DURATION_S}"),
        "reason": (_identifier, _R, "a reason such as 'badge_off'"),
        "end_estimated": (_boolean, _O, "true or false"),
        "by": (_optional(_text(200)), _O, "a string of at most 200 characters"),
        "extension_refused": (_optional(_identifier), _O, "a reason such as 'machine_locked'"),
    },
    EventType.ACCESS_DENIED: {
        "badge": (BADGE, _R, SAYS[BADGE]),
        "member_id": (_optional(MEMBER_ID), _O, f"null or {SAYS[MEMBER_ID]}"),
        "reason": (_identifier, _R, "a reason such as 'not_inducted'"),
    },
    EventType.MACHINE_LOCKED: {"by": (_optional(_text(200)), _R, "a string of at most 200 characters"),
                               "reason": (_optional(_text(1000)), _R, "a string of at most 1000 characters")},
    EventType.MACHINE_UNLOCKED: {"by": (_optional(_text(200)), _R, "a string of at most 200 characters"),
                                 "reason": (_optional(_text(1000)), _O, "a string of at most 1000 characters")},
    EventType.COMMAND_REJECTED: {"error": (_text(4000), _R, "a string of at most 4000 characters")},
    EventType.MEMBERS_UPDATED: {"version": (_integer(0), _R, f"an integer from 0 to {MAX_SEQ}"),
                                "count": (_integer(0), _R, f"an integer from 0 to {MAX_SEQ}")},
    EventType.MEMBERS_REJECTED: {"version": (_optional(_integer(0)), _O, f"null or an integer from 0 to {MAX_SEQ}"),
                                 "error": (_text(4000), _R, "a string of at most 4000 characters")},
    EventType.AGENT_STARTED: {"agent_version": (_text(64), _R, "a string of at most 64 characters")},
    EventType.AGENT_STOPPED: {"agent_version": (_text(64), _R, "a string of at most 64 characters")},
    EventType.MACHINE_ID_CONFLICT: {"other_incarnation": (_text(64), _R, "a string of at most 64 characters")},
}
# The columns the archive indexes, whatever the event's type.
_COLUMNS = {"member_id": (_optional(MEMBER_ID), f"null or {SAYS[MEMBER_ID]}"),
            "badge": (_optional(BADGE), f"null or {SAYS[BADGE]}"),
            "reason": (_optional(_text(1000)), "null or a string of at most 1000 characters")}


def _refuse_constant(name: str) -> Any:
    raise MalformedEvent(f"not JSON: {name} is not a JSON number")


def load_object(payload: bytes, what: str, limit: int = MAX_PAYLOAD) -> dict[str, Any]:
    """A JSON object from `payload`, or MalformedEvent (too large, not UTF-8 or JSON, nested
    too deeply, NaN or Infinity, a string that cannot be stored as UTF-8, not an object)."""
    if len(payload) > limit:
        raise MalformedEvent(f"{what} of {len(payload)} bytes, more than {limit}")
    try:
        obj = json.loads(payload, parse_constant=_refuse_constant)
        json.dumps(obj, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be stored
    except MalformedEvent:
        raise
    except RecursionError:
        raise MalformedEvent(f"{what} is nested too deeply") from None
    except (UnicodeError, ValueError) as err:  # JSONDecodeError, a 5,000-digit number
        raise MalformedEvent(f"{what} is not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise MalformedEvent(f"{what} is not a JSON object")
    return obj


def _moment(value: Any) -> str:
    """`ts` normalised to sortable RFC 3339 UTC, within the years the archive can hold."""
    try:
        moment = parse_rfc3339(value)
        text = rfc3339(moment)
    except (ValueError, OverflowError):
        raise MalformedEvent(f"'ts' {str(value)[:40]!r} is not an RFC 3339 time with a UTC offset") from None
    if not EARLIEST <= moment < LATEST:
        raise MalformedEvent(f"'ts' {text} is outside {EARLIEST.year} to {LATEST.year - 1}")
    return text


def parse_event(payload: bytes, topic_machine: str) -> dict[str, Any]:
    """The event in `payload`, with `ts` normalised and `incarnation` ('' for an agent
    that predates incarnations) always present.

    The payload's `machine` must be the one in its topic: the broker's ACL lets
    a machine publish only under its own topic, so a mismatch is a forgery or a bug.
    """
    event = load_object(payload, "event")
    if event.get("v") != 1 or type(event.get("v")) is not int:
        raise MalformedEvent(f"unsupported version v={str(event.get('v'))[:20]}")
    if not isinstance(event.get("event_id"), str) or not 0 < len(event["event_id"]) <= 64:
        raise MalformedEvent("'event_id' is missing or not a string of 1 to 64 characters")
    if not _identifier(event.get("type")):
        raise MalformedEvent("'type' is missing or not an event type such as 'session_started'")
    if not _integer(1)(event.get("seq")):
        raise MalformedEvent(f"'seq' is missing or not an integer from 1 to {MAX_SEQ}")
    incarnation = event.get("incarnation", "")
    if not isinstance(incarnation, str) or not _INCARNATION.fullmatch(incarnation):
        raise MalformedEvent("'incarnation' is not a string of at most 64 letters, digits, '-' or '_'")
    if not is_machine_id(topic_machine) or len(topic_machine) > 64 or event.get("machine") != topic_machine:
        raise MalformedEvent(f"machine {str(event.get('machine'))[:70]!r} does not match its topic's "
                             f"{topic_machine[:70]!r}")
    ts = _moment(event.get("ts"))
    for key, (check, required, says) in FIELDS.get(event["type"], {}).items():
        if key not in event:
            if required:
                raise MalformedEvent(f"{event['type']} without {key!r}")
        elif not check(event[key]):
            raise MalformedEvent(f"{event['type']}: {key!r} must be {says}")
    for key, (check, says) in _COLUMNS.items():
        if not check(event.get(key)):
            raise MalformedEvent(f"{event['type']}: {key!r} must be {says}")
    return {**event, "ts": ts, "incarnation": incarnation}


def parse_status(payload: bytes, topic_machine: str) -> dict[str, Any]:
    """A retained status object. Only `machine` and `state` are relied on, and
    `incarnation` and `kept_from` when present (they move the archived mark)."""
    status = load_object(payload, "status")
    if not isinstance(status.get("state"), str) or not 0 < len(status["state"]) <= 32:
        raise MalformedEvent("status without a 'state' of 1 to 32 characters")
    if status.get("machine") != topic_machine or not is_machine_id(topic_machine):
        raise MalformedEvent(f"status machine {str(status.get('machine'))[:70]!r} does not match its topic")
    incarnation = status.get("incarnation")
    if incarnation is not None and (not isinstance(incarnation, str) or not _INCARNATION.fullmatch(incarnation)):
        raise MalformedEvent("status 'incarnation' is not a string of at most 64 letters, digits, '-' or '_'")
    if status.get("kept_from") is not None and not _integer(1)(status["kept_from"]):
        raise MalformedEvent(f"status 'kept_from' is not an integer from 1 to {MAX_SEQ}")
    return status


def parse_names(payload: bytes, limit: int) -> tuple[int, dict[str, str | None]]:
    """(version, member id -> name) from a member list on `P/members`: only what the
    logbook shows. The agents validate the rest of it."""
    snapshot = load_object(payload, "member list", limit)
    version, members = snapshot.get("version"), snapshot.get("members")
    if not _integer(0)(version) or not isinstance(members, list):
        raise MalformedEvent("member list without an integer 'version' and a 'members' array")
    names: dict[str, str | None] = {}
    for number, member in enumerate(members, 1):
        name = member.get("name", "") if isinstance(member, dict) else None  # optional, as for the agents
        if not isinstance(member, dict) or not MEMBER_ID(member.get("id")) or not isinstance(name, str) \
                or (name and not _text(1000)(name)):
            raise MalformedEvent(f"member list: member {number} has no string 'id' and 'name'")
        names[member["id"]] = name or None
    return version, names
