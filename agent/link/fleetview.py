"""The fleet as technicians see it: every machine's retained status, and live events as text."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from agent.core.model import EventType
from agent.link.broker import Broker, BrokerUnreachable, connected


def fleet_status(broker: Broker, prefix: str = "fabpass", quiet: float = 0.5, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The retained status of every machine, sorted by machine id. Raises BrokerUnreachable."""
    machines: dict[str, dict[str, Any]] = {}
    subscribed = threading.Event()
    last = [time.monotonic()]

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        last[0] = time.monotonic()
        subscribed.set()

    def on_message(client, userdata, message) -> None:
        last[0] = time.monotonic()
        try:
            status = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(status, dict):
            machines[message.topic.split("/")[-2]] = status

    with connected(broker, timeout=timeout) as client:
        client.on_subscribe, client.on_message = on_subscribe, on_message
        client.subscribe(f"{prefix}/machines/+/status", qos=1)
        if not subscribed.wait(timeout):
            raise BrokerUnreachable(f"broker {broker} did not answer the subscription")
        # Retained messages follow the SUBACK at once; wait until they stop coming.
        while time.monotonic() - last[0] < quiet:
            time.sleep(0.05)
    return [{**machines[k], "machine": machines[k].get("machine", k)} for k in sorted(machines)]


def format_fleet(machines: list[dict[str, Any]]) -> str:
    if not machines:
        return "no machine has reported yet"
    rows = [("MACHINE", "STATE", "MEMBER", "SINCE", "LIST", "OUTBOX", "ONLINE")]
    for m in machines:
        online = m.get("state") != "offline"
        rows.append((m["machine"], m.get("state", "?"), m.get("member_id") or "-", m.get("since") or "-",
                     str(m.get("members_version") or "-"), str(m.get("outbox", "-")), "yes" if online else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_event(event: dict[str, Any]) -> str:
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
    }.get(kind, kind)
    return f"{ts}  {event.get('machine', '?'):<12} #{event.get('seq', '?'):<6} {details}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
