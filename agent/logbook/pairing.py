"""Sessions from session_started/session_ended events, whatever order they arrived in (pure).

An incarnation's events (one machine's storage), ordered by `seq`, fall into segments that each begin at a
session_started. The first session_ended in a segment closes that segment's
session; any other end in it (or before the first start) is an *orphan*: its
start has not arrived yet. An orphan is still listed, with its start estimated
from its `duration_s`, so billing and "who was on it" never miss a session.
When the missing start arrives, it splits the segment and claims the end.

Because the result depends only on the set of events, never on their arrival
order, the store can rebuild just the segments around a newly arrived event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from agent.core.model import EventType
from agent.core.timespec import parse_rfc3339, rfc3339


def _from_start(start: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": start["machine"], "incarnation": start.get("incarnation", ""), "anchor_seq": start["seq"],
        "start_seq": start["seq"], "end_seq": None,
        "member_id": start["member_id"], "badge": start["badge"],
        "start": start["ts"], "end": None, "duration_s": None, "end_reason": None,
        "start_estimated": False, "end_estimated": False,
    }


def _close(row: dict[str, Any], end: dict[str, Any]) -> None:
    row.update(
        end_seq=end["seq"], end=end["ts"], end_reason=end["reason"],
        duration_s=float(end["duration_s"]), end_estimated=bool(end.get("end_estimated", False)),
    )


def _orphan(end: dict[str, Any]) -> dict[str, Any]:
    start = parse_rfc3339(end["ts"]) - dt.timedelta(seconds=end["duration_s"])
    row = {
        "machine": end["machine"], "incarnation": end.get("incarnation", ""), "anchor_seq": end["seq"],
        "start_seq": None,
        "member_id": end["member_id"], "badge": None, "start": rfc3339(start),
        "start_estimated": True,
    }
    _close(row, end)
    return row


def pair(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Session rows from one incarnation's session events (any order, no duplicate seq)."""
    rows: list[dict[str, Any]] = []
    open_row: dict[str, Any] | None = None
    for event in sorted(events, key=lambda e: e["seq"]):
        if event["type"] == EventType.SESSION_STARTED:
            open_row = _from_start(event)
            rows.append(open_row)
        elif event["type"] == EventType.SESSION_ENDED:
            if open_row is not None:
                _close(open_row, event)
                open_row = None
            else:
                rows.append(_orphan(event))
    return rows
