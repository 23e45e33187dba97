"""How the command line shows things to a person: tables, one line per event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.core.model import EventType


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """Plain columns two spaces apart, the header first; None shows as empty."""
    from tabulate import tabulate

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    return tabulate(cells, headers=list(header), tablefmt="plain", disable_numparse=True,
                    colalign=align).rstrip()


def fleet_table(machines: list[dict[str, Any]]) -> str:
    if not machines:
        return "no machine has reported yet"
    rows = []
    for m in machines:
        online = m.get("state") != "offline"
        rows.append((m["machine"], m.get("state", "?"), m.get("member_id") or "-", m.get("since") or "-",
                     str(m.get("members_version") or "-"), str(m.get("outbox", "-")), "yes" if online else "NO"))
    return table(["MACHINE", "STATE", "MEMBER", "SINCE", "LIST", "OUTBOX", "ONLINE"], rows)


def event_line(event: dict[str, Any]) -> str:
    """One readable line per usage event."""
    ts = str(event.get("ts", "?")).replace("T", " ").split(".")[0].rstrip("Z")
    kind = event.get("type", "?")
    who = event.get("member_id") or "-"
    badge = f" badge {event['badge']}" if event.get("badge") else ""
    details = {
        EventType.SESSION_STARTED: f"{who} started{badge}",
        EventType.SESSION_ENDED: f"{who} ended after {_duration(event.get('duration_s'))} ({event.get('reason')})"
                         + (" [end estimated]" if event.get("end_estimated") else ""),
        EventType.SESSION_EXTENDED: f"{who} extended the session",
        EventType.ACCESS_DENIED: f"REFUSED {who}{badge}: {event.get('reason')}",
        EventType.MACHINE_LOCKED: f"locked by {event.get('by')}: {event.get('reason')}",
        EventType.MACHINE_UNLOCKED: f"unlocked by {event.get('by')}",
        EventType.COMMAND_REJECTED: f"command rejected: {event.get('error')}",
        EventType.MEMBERS_UPDATED: f"member list version {event.get('version')} ({event.get('count')} members)",
        EventType.MEMBERS_REJECTED: f"member list REJECTED: {event.get('error')}",
        EventType.AGENT_STARTED: f"agent {event.get('agent_version')} started",
        EventType.AGENT_STOPPED: "agent stopped",
        EventType.MACHINE_ID_CONFLICT: f"CONFLICT: another agent uses this id ({event.get('other_incarnation')})",
    }.get(kind, kind)
    return f"{ts}  {event.get('machine', '?'):<12} #{event.get('seq', '?'):<6} {details}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
