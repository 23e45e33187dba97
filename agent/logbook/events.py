"""Validating event payloads from `P/machines/ID/events` before they are archived (pure)."""

from __future__ import annotations

import json
from typing import Any

from agent.core.model import EventType, is_machine_id
from agent.core.timespec import MissingOffset, parse_rfc3339, rfc3339

SESSION_TYPES = (EventType.SESSION_STARTED, EventType.SESSION_ENDED)

# Fields each type needs beyond the common ones, with the types they must have.
_REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    EventType.SESSION_STARTED: {"member_id": (str,), "badge": (str,)},
    EventType.SESSION_ENDED: {"member_id": (str,), "duration_s": (int, float), "reason": (str,)},
    EventType.ACCESS_DENIED: {"badge": (str,), "reason": (str,)},
    # at the machine: what the lab's sync merges into the list (members sync --db)
    EventType.BADGE_ENROLLED: {"member_id": (str,), "badge": (str,), "by": (str,)},
    EventType.INDUCTION_GRANTED: {"member_id": (str,), "induction": (str,), "by": (str,)},
}


class MalformedEvent(ValueError):
    """A payload that is not an event of the documented shape (docs/reference/mqtt.md); it is logged and skipped."""


def parse_event(payload: bytes, topic_machine: str) -> dict[str, Any]:
    """The event in `payload`, with `ts` normalised to sortable RFC 3339 UTC.

    The payload's `machine` must be the one in its topic: the broker's ACL lets
    a machine publish only under its own topic, so a mismatch is a forgery or a bug.
    """
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MalformedEvent(f"not JSON: {err}") from None
    if not isinstance(event, dict):
        raise MalformedEvent("not a JSON object")
    if event.get("v") != 1:
        raise MalformedEvent(f"unsupported version v={event.get('v')!r}")
    for key in ("event_id", "type", "machine", "ts"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise MalformedEvent(f"{key!r} is missing or not a string")
    seq = event.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise MalformedEvent("'seq' is missing or not a positive integer")
    if event["machine"] != topic_machine or not is_machine_id(topic_machine):
        raise MalformedEvent(f"machine {event['machine']!r} does not match its topic's {topic_machine!r}")
    try:
        moment = parse_rfc3339(event["ts"])
    except MissingOffset:
        raise MalformedEvent(f"'ts' {event['ts']!r} has no UTC offset") from None
    except ValueError:
        raise MalformedEvent(f"'ts' {event['ts']!r} is not an RFC 3339 time") from None
    for key, types in _REQUIRED.get(event["type"], {}).items():
        value = event.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise MalformedEvent(f"{event['type']} without a valid {key!r}")
    if event["type"] == EventType.SESSION_ENDED and event["duration_s"] < 0:
        raise MalformedEvent("'duration_s' is negative")
    return {**event, "ts": rfc3339(moment)}


def parse_status(payload: bytes, topic_machine: str) -> dict[str, Any]:
    """A retained status object (its shape is the agent's; only `machine` and `state` are relied on)."""
    try:
        status = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MalformedEvent(f"status is not JSON: {err}") from None
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        raise MalformedEvent("status is not an object with a 'state'")
    if status.get("machine") != topic_machine:
        raise MalformedEvent(f"status machine {status.get('machine')!r} does not match its topic")
    return status
