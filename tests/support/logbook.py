"""Contract-shaped events for the logbook tests, as a machine agent would publish them."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.core.timespec import rfc3339
from agent.link.broker import Broker, disconnect, make_client

UTC = dt.timezone.utc
MONDAY = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakeMachine:
    """Numbers its events like an agent's outbox: seq 1, 2, 3…, each with a fresh event_id.
    Without an `incarnation` its events are those of an agent that predates incarnations."""

    def __init__(self, machine: str, incarnation: str | None = None) -> None:
        self.machine = machine
        self.incarnation = incarnation
        self.seq = 0

    def event(self, type: str, at: dt.datetime, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        named = {} if self.incarnation is None else {"incarnation": self.incarnation}
        return {"v": 1, "event_id": str(uuid.uuid4()), "seq": self.seq, **named, "type": type,
                "machine": self.machine, "ts": rfc3339(at), **fields}

    def session(self, member_id: str, badge: str, start: dt.datetime, minutes: float,
                reason: str = "badge_off") -> list[dict[str, Any]]:
        return [
            self.event("session_started", start, member_id=member_id, badge=badge),
            self.event("session_ended", start + dt.timedelta(minutes=minutes),
                       member_id=member_id, duration_s=minutes * 60, reason=reason),
        ]

    def refusal(self, at: dt.datetime, badge: str, reason: str, member_id: str | None = None) -> dict[str, Any]:
        return self.event("access_denied", at, badge=badge, reason=reason, member_id=member_id)


def publish(url: str, messages: Iterable[tuple[str, bytes | dict]], retain: bool = False) -> None:
    """Publish (topic, payload) pairs with QoS 1 and wait for each PUBACK."""
    client = make_client(Broker.parse(url))
    client.connect("127.0.0.1", Broker.parse(url).port)
    client.loop_start()
    try:
        for topic, payload in messages:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            client.publish(topic, body, qos=1, retain=retain).wait_for_publish(10)
    finally:
        disconnect(client)


def logbook_of(path: Path, events: Iterable[dict[str, Any]]) -> Path:
    """A logbook database at `path` holding `events`, archived as the collector does."""
    from agent.logbook.store import ingest, open_db

    with open_db(path, create=True) as db:
        for event in events:
            ingest(db, event)
    return path


def events_topic(event: dict[str, Any], prefix: str = "fabpass") -> tuple[str, dict[str, Any]]:
    return f"{prefix}/machines/{event['machine']}/events", event


def stop_cleanly(proc: subprocess.Popen) -> None:
    """SIGTERM, then the command must exit 0; killed if it does not stop."""
    try:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, (stderr or b"").decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
