"""How the command line shows things to a person: tables, one line per event.

Member ids, names, badges, reasons and machine names come from member lists,
machine accounts and the broker: data a stranger may have written. A terminal
obeys the control characters in what it prints (an escape sequence can clear
the screen, retitle the window, or hide a line), so every text path shows
them escaped (`shown`); `--json` output is JSON, which escapes them itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.core.model import EventType


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# C0 controls and DEL, C1 controls, the line and paragraph separators and the
# bidirectional overrides and isolates (which reorder what follows them).
_UNSAFE = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F),
           *range(0x2066, 0x206A)]
_ESCAPED = {code: _escape(code) for code in _UNSAFE}


def shown(value: Any) -> str:
    """`value` as text for a terminal: control characters from data escaped (`\\x1b`)."""
    return str(value).translate(_ESCAPED)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """Plain columns two spaces apart, the header first; None shows as empty, data escaped (`shown`)."""
    import tabulate as tabulating

    # As the tables were before tabulate: no padding beyond the two spaces between
    # columns (the header would get two more), and cells shown as they are.
    tabulating.MIN_PADDING, tabulating.PRESERVE_WHITESPACE = 0, True
    cells = [["" if v is None else shown(v) for v in row] for row in rows]
    return tabulating.tabulate(cells, headers=list(header), tablefmt="plain", disable_numparse=True,
                               colalign=align).rstrip()


def fleet_table(machines: list[dict[str, Any]]) -> str:
    if not machines:
        return "no machine has reported yet"
    rows = []
    for m in machines:
        online = m.get("state") != "offline"
        rows.append((m["machine"], m.get("state", "?"), m.get("member_id") or "-", m.get("since") or "-",
                     str(m.get("members_version") or "-"), str(m.get("outbox", "-")), clock_word(m),
                     "yes" if online else "NO"))
    return table(["MACHINE", "STATE", "MEMBER", "SINCE", "LIST", "OUTBOX", "CLOCK", "ONLINE"], rows)


def clock_word(status: dict[str, Any]) -> str:
    """A status's clock in a word: `ok`, `trusted` (not synchronised, require_sync off),
    `NOT SYNCED` (dated rules refuse), `-` (not reported: offline, or an older agent)."""
    synchronised, trusted = status.get("clock_synchronised"), status.get("clock_trusted")
    if synchronised is None:
        return "-"
    return "ok" if synchronised else "trusted" if trusted else "NOT SYNCED"


def event_line(event: dict[str, Any], names: Mapping[str, str] | None = None) -> str:
    """One readable line per usage event, its data escaped (`shown`); members are named
    from `names` (id -> name) when known."""
    ts = str(event.get("ts", "?")).replace("T", " ").split(".")[0].rstrip("Z")
    kind = event.get("type", "?")

    def named(member_id: Any) -> str:
        name = (names or {}).get(member_id) if isinstance(member_id, str) else None
        return f"{name} ({member_id})" if name else str(member_id or "-")

    who = named(event.get("member_id"))
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
        # at the machine
        EventType.BADGE_ENROLLED: f"{who} enrolled{badge} (by {event.get('by')})",
        EventType.ENROLMENT_REFUSED: f"enrolment of {who} by {event.get('by')}: " + {
            "unknown_member": "REFUSED, no such member in the list",
            "badge_known": f"REFUSED,{badge} belongs to {named(event.get('owner'))}",
            "window_closed": "closed, no unknown badge was tapped within 60 s",
        }.get(str(event.get("reason")), str(event.get("reason"))),
        EventType.INDUCTION_GRANTED: f"{who} inducted on {event.get('induction')} by {named(event.get('by'))}"
                                     + (f" until {event['expires']}" if event.get("expires") else ""),
        EventType.OUT_OF_ORDER_REPORTED: "OUT OF ORDER reported" + (f" by {named(event['by'])}" if event.get("by")
                                                                    else ""),
        EventType.BYPASS_ON: "BYPASS ON: the key switch powers the machine",
        EventType.BYPASS_OFF: "bypass off",
        EventType.MACHINE_ID_CONFLICT: f"CONFLICT: another agent uses this id ({event.get('other_incarnation')})",
    }.get(kind, kind)
    return shown(f"{ts}  {event.get('machine', '?'):<12} #{event.get('seq', '?'):<6} {details}")


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


