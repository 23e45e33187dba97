"""What the technicians are told about (`fabpass logbook run --notify`), decided from
the events and statuses the collector archives.

One message each for `out_of_order_reported`, `machine_locked`,
`machine_unlocked`, `machine_id_conflict`, `members_rejected` (once per machine
and list version), an `access_denied` for `storage_error`, a machine offline
for more than 5 minutes and its return, and a service counter reaching its
limit. Events more than a day old (a backlog the broker kept while the logbook
was down) are archived without a message.

`Alerts` is a collector listener: the collector hands it each archived event
and status and goes on at once; the deciding (which may query the logbook for
the service counters) and the sending happen on threads of their own.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.model import EventType, Reason
from agent.core.timespec import parse_rfc3339
from agent.logbook.notify import Notifier
from agent.logbook.retired import retired_machines

log = logging.getLogger(__name__)

OFFLINE_AFTER_S = 300.0
TOO_OLD = dt.timedelta(days=1)
INBOX_SIZE = 10000


def _who(event: dict[str, Any]) -> str:
    return f" by {event['by']}" if event.get("by") else ""


def _message(event: dict[str, Any]) -> tuple[str, str] | None:
    """(title, body) for an event that technicians are told about, else None."""
    machine, kind = event["machine"], event["type"]
    reason = f": {event['reason']}" if event.get("reason") else ""
    if kind == EventType.OUT_OF_ORDER_REPORTED:
        return (f"{machine} reported out of order",
                f"{machine} was reported out of order{_who(event)} at {event['ts']}; it is locked until unlocked.")
    if kind == EventType.MACHINE_LOCKED:
        return f"{machine} locked", f"{machine} was locked{_who(event)}{reason} at {event['ts']}."
    if kind == EventType.MACHINE_UNLOCKED:
        return f"{machine} unlocked", f"{machine} was unlocked{_who(event)}{reason} at {event['ts']}."
    if kind == EventType.MACHINE_ID_CONFLICT:
        return (f"{machine}: two agents use this machine id",
                f"Another live agent (incarnation {event.get('other_incarnation')}) uses the id {machine}: "
                "a cloned SD card or a copied config? Both are archived; give one another id.")
    if kind == EventType.MEMBERS_REJECTED:
        return (f"{machine} refused member list version {event.get('version')}",
                f"{machine} refused member list version {event.get('version')}: {event.get('error')}. "
                "Its last good list stays in force.")
    if kind == EventType.ACCESS_DENIED and event.get("reason") == Reason.STORAGE_ERROR:
        return (f"{machine} cannot write its storage",
                f"{machine} refused a tap at {event['ts']} because it could not record it (storage_error): "
                "its SD card is full or failing. Sessions cannot start there until it is fixed.")
    return None


class Alerts:
    """Turns archived events and statuses into messages for `notifier`."""

    def __init__(self, notifier: Notifier, db_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 offline_after_s: float = OFFLINE_AFTER_S, thresholds: dict[str, float] | None = None) -> None:
        self.notifier, self.db_path = notifier, db_path
        self._clock, self._wall = clock, wall
        self.offline_after_s = offline_after_s
        self.thresholds = thresholds
        self._inbox: queue.Queue[tuple[str, Any] | None] = queue.Queue(INBOX_SIZE)
        self._offline_since: dict[str, tuple[float, dt.datetime]] = {}
        self._told_offline: set[str] = set()
        self._rejections: set[tuple[str, Any]] = set()
        self._service_told: set[tuple[str, str | None]] = set()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._db = None

    # --- the collector's side: never blocks ---------------------------------------------------

    def archived(self, event: dict[str, Any]) -> None:
        self._put(("event", event))

    def status(self, machine: str, status: dict[str, Any]) -> None:
        self._put(("status", (machine, status)))

    def connected(self, client: Any) -> None:
        pass

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._inbox.put_nowait(item)
        except queue.Full:
            log.error("alerts are behind; an event was not checked for a notification")

    # --- the thread ---------------------------------------------------------------------------

    def start(self) -> Alerts:
        self.notifier.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._inbox.put(None)
            self._thread.join(5)
        self.notifier.stop()

    def _run(self) -> None:
        if self.db_path is not None:
            import sqlite3

            from agent.logbook.store import open_db

            try:
                self._db = open_db(self.db_path, create=True)  # the collector may be creating it now
            except sqlite3.Error:
                log.exception("cannot read the logbook: no service or retirement checks for notifications")
        try:
            while True:
                try:
                    item = self._inbox.get(timeout=1.0)
                except queue.Empty:
                    item = ("tick", None)
                if item is None:
                    return
                try:
                    self._handle(*item)
                except Exception:
                    log.exception("deciding a notification failed")
                self._tick()
        finally:
            if self._db is not None:
                self._db.close()

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "event":
            self._event(value)
        elif kind == "status":
            self._status(*value)

    def _event(self, event: dict[str, Any]) -> None:
        if self._wall() - parse_rfc3339(event["ts"]) > TOO_OLD:
            return
        machine = event["machine"]
        if event["type"] == EventType.MEMBERS_REJECTED:
            key = (machine, event.get("version"))
            if key in self._rejections:
                return
            self._rejections.add(key)
        message = _message(event)
        if message:
            self.notifier.submit(machine, *message)
        if event["type"] == EventType.SESSION_ENDED and self._db is not None:
            self._service(machine)

    def _service(self, machine: str) -> None:
        from agent.logbook.maintenance import counters

        for counter in counters(self._db, self._wall(), self.thresholds, machine):
            key = (machine, counter["last_service"])
            if counter["due"] and key not in self._service_told:
                self._service_told.add(key)
                self.notifier.submit(machine, f"{machine} is due for service",
                                     f"{machine} has run {counter['hours_since_service']:.1f} h since "
                                     f"{counter['last_service'] or 'its first session'}; "
                                     f"its service interval is {counter['every_hours']} h.")

    def _status(self, machine: str, status: dict[str, Any]) -> None:
        if self._db is not None and machine in retired_machines(self._db):
            return  # taken out of service: its last will says offline for ever
        if status.get("state") == "offline":
            self._offline_since.setdefault(machine, (self._clock(), self._wall()))
            return
        since = self._offline_since.pop(machine, None)
        if machine in self._told_offline:
            self._told_offline.discard(machine)
            minutes = (self._clock() - since[0]) / 60 if since else 0
            self.notifier.submit(machine, f"{machine} is back online",
                                 f"{machine} is back online after {minutes:.0f} min offline.")

    def _tick(self) -> None:
        now = self._clock()
        for machine, (since, wall) in self._offline_since.items():
            if machine not in self._told_offline and now - since >= self.offline_after_s:
                self._told_offline.add(machine)
                self.notifier.submit(machine, f"{machine} is offline",
                                     f"{machine} has been offline since {wall:%Y-%m-%d %H:%M} UTC "
                                     f"(more than {self.offline_after_s / 60:.0f} min): no power, no network, "
                                     "or its agent stopped.")
