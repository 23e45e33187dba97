"""The fleet as technicians see it: every machine's retained status, and live events as text."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from agent.broker import Broker, make_client


class BrokerUnreachable(ConnectionError):
    pass


def fleet_status(broker: Broker, prefix: str = "fabpass", quiet: float = 0.5, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The retained status of every machine, sorted by machine id."""
    machines: dict[str, dict[str, Any]] = {}
    subscribed = threading.Event()
    last = [time.monotonic()]
    refused: list[str] = []
    client = make_client(broker)

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
            subscribed.set()
            return
        client.subscribe(f"{prefix}/machines/+/status", qos=1)

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

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as err:
        raise BrokerUnreachable(f"cannot reach broker {broker}: {err}") from None
    client.loop_start()
    try:
        if not subscribed.wait(timeout) or refused:
            raise BrokerUnreachable(f"broker {broker} refused: {refused[0]}" if refused else f"no answer from {broker}")
        # Retained messages follow the SUBACK at once; wait until they stop coming.
        while time.monotonic() - last[0] < quiet:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
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
        "session_started": f"{who} started{badge}",
        "session_ended": f"{who} ended after {_duration(event.get('duration_s'))} ({event.get('reason')})"
                         + (" [end estimated]" if event.get("end_estimated") else ""),
        "session_extended": f"{who} extended the session",
        "access_denied": f"REFUSED {who}{badge}: {event.get('reason')}",
        "machine_locked": f"locked by {event.get('by')}: {event.get('reason')}",
        "machine_unlocked": f"unlocked by {event.get('by')}",
        "command_rejected": f"command rejected: {event.get('error')}",
        "members_updated": f"member list version {event.get('version')} ({event.get('count')} members)",
        "members_rejected": f"member list REJECTED: {event.get('error')}",
        "agent_started": f"agent {event.get('agent_version')} started",
        "agent_stopped": "agent stopped",
    }.get(kind, kind)
    return f"{ts}  {event.get('machine', '?'):<12} #{event.get('seq', '?'):<6} {details}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
