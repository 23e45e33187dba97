"""The collector: archives every machine's events and statuses from MQTT into the logbook,
and tells each machine, on a retained `P/machines/ID/archived`, what it holds.

It holds a persistent MQTT v5 session (a fixed client id, clean_start False,
a session expiry of days) with QoS 1 subscriptions, so the broker queues
events while the collector is down and delivers them when it returns; what
the broker loses (a restart without persistence, a logbook started after the
machines) the agents send again, because the archived marks show it missing.

Acknowledgements are manual: a message is acknowledged only after its
transaction is committed. Nothing a message holds can stop the collector:
what it cannot archive goes to the quarantine table, and no exception ever
reaches paho's network thread. Only a failing database stops it: then it
stops acknowledging and reports failure (`logbook run` exits 1, systemd
restarts it); the broker redelivers what was not acknowledged.

Listeners (notifications, Home Assistant) are told of each newly archived
event and each status once it is committed; they must return at once, and
their failures are logged, never allowed to stop archiving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core.timespec import parse_rfc3339
from agent.link.broker import Broker, Outage, disconnect, make_client
from agent.link.topics import DEFAULT_PREFIX, Topics
from agent.logbook import store
from agent.logbook.events import MalformedEvent, parse_event, parse_status
from agent.logbook.marks import MarkBook
from agent.logbook.names import record_names
from agent.logbook.store import NotArchivable, Outcome, open_db

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "fabpass-logbook"
DEFAULT_SESSION_EXPIRY_S = 14 * 86400
DEFAULT_KEEP_S = 30 * 86400  # as the agents' [storage] keep
RECONNECT_MAX_S = 30
MARK_EVERY_S = 0.5  # a machine's mark is published at most this often: many events per message


class DatabaseFailed(RuntimeError):
    """The logbook database cannot be written: stop acknowledging, exit 1."""


def _fatal(err: sqlite3.Error) -> bool:
    """A failing database (full, read-only, I/O, corrupt, locked too long), as opposed to a
    message SQLite refused (a constraint, a value it cannot bind): that one is quarantined."""
    return isinstance(err, (sqlite3.OperationalError, sqlite3.InternalError)) or type(err) is sqlite3.DatabaseError


class Listener(Protocol):
    def archived(self, event: dict[str, Any]) -> None: ...
    def status(self, machine: str, status: dict[str, Any]) -> None: ...
    def connected(self, client: mqtt.Client) -> None: ...


class Collector:
    """Subscribe, archive, acknowledge, publish marks. `start()` returns at once; `stop()` is idempotent."""

    def __init__(self, broker: Broker, db_path: str | Path, prefix: str = DEFAULT_PREFIX,
                 client_id: str = DEFAULT_CLIENT_ID,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S, keep_s: float = DEFAULT_KEEP_S,
                 listeners: Sequence[Listener] = ()) -> None:
        self.broker = broker
        self.listeners = list(listeners)
        self.prefix = prefix
        self.topics = Topics(prefix)
        self.session_expiry_s = session_expiry_s
        self.db = open_db(db_path, create=True)
        self.connected = threading.Event()
        self.failed = threading.Event()  # the database failed: stop, exit 1, get redelivered
        # Every message handled counts once: events stored or duplicate, statuses, member lists, quarantined.
        self.counts = {**{outcome: 0 for outcome in Outcome}, "statuses": 0, "member_lists": 0, "quarantined": 0}
        self._book = MarkBook(keep_s)
        for mark in store.marks(self.db):
            self._book.load(mark["machine"], mark["incarnation"], mark["seq"],
                            parse_rfc3339(mark["updated"]).timestamp())
        self._book_lock = threading.Lock()
        self._names_digest: str | None = None  # of the member list last taken
        self._client = make_client(broker, client_id=client_id)
        self._client.manual_ack_set(True)
        self._client.reconnect_delay_set(1, RECONNECT_MAX_S)
        self._outage = Outage(log, broker, f"retrying every {RECONNECT_MAX_S} s at most; "
                                           "meanwhile events wait in the agents' outboxes or on the broker")
        self._client.on_connect_fail = self._outage.on_connect_fail
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.suppress_exceptions = True  # a last net: our callbacks catch what they can raise
        self._stop = threading.Event()
        self._marker = threading.Thread(target=self._publish_marks, name="logbook-marks", daemon=True)
        self._running = False

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30,
                                   clean_start=False, properties=properties)
        self._client.loop_start()
        self._marker.start()
        self._running = True
        log.info("logbook collecting from %s (prefix %r)", self.broker, self.prefix)

    def stop(self) -> None:
        """Disconnect (the broker keeps the session and queues for us) and close the database."""
        if not self._running:
            return
        self._running = False
        self._stop.set()
        self._marker.join(5)
        disconnect(self._client)
        self.db.close()

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- paho callbacks (network thread): nothing raised here may reach paho ----------------

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.broker, reason_code)
            return
        self._outage.ended()
        client.subscribe([(self.topics.events(), 1), (self.topics.status(), 1), (self.topics.members, 1)])
        log.info("connected to %s (session %s)", self.broker, "resumed" if flags.session_present else "new")
        with self._book_lock:
            # Every mark again: one may have been lost with a crash of ours. Without a session the
            # broker kept nothing for us (the first start, a broker restarted without persistence,
            # an expired session): events may have been dropped on the way, so ask for them.
            self._book.all_due(resend=not flags.session_present)
        self.connected.set()
        self._tell("connected", client)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if self._running:
            log.warning("disconnected from %s (%s); reconnecting", self.broker, reason_code)

    def _on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        if self.failed.is_set():
            return  # unacknowledged: redelivered to the next collector
        try:
            self._take(message.topic, message.payload)
        except Exception:  # the database failed (or the quarantine did): never into paho's thread
            log.exception("the logbook database failed; stopping without acknowledging")
            self.failed.set()
            return
        client.ack(message.mid, message.qos)

    # -- archiving -------------------------------------------------------------------------

    def _take(self, topic: str, payload: bytes) -> None:
        """Archive one message, or quarantine it; DatabaseFailed when the database fails."""
        try:
            try:
                self.counts[self._archive(topic, payload)] += 1
            except (MalformedEvent, NotArchivable) as err:
                self._quarantine(topic, payload, str(err))
            except sqlite3.Error as err:
                if _fatal(err):
                    raise DatabaseFailed(str(err)) from err
                self._quarantine(topic, payload, f"the database refused it: {err}")
            except Exception as err:  # a check we lack: the message is to blame, not the database
                log.exception("quarantining a message on %s that the checks let through", topic[:200])
                self._quarantine(topic, payload, f"cannot be archived: {type(err).__name__}: {err}")
        except sqlite3.Error as err:  # the quarantine itself could not be written
            raise DatabaseFailed(str(err)) from err

    def _archive(self, topic: str, payload: bytes) -> str:
        """Archive one message; which of `counts` it counts in."""
        if topic == self.topics.members:
            self._take_names(payload)
            return "member_lists"
        machine, kind = self.topics.parse(topic) or ("", "")
        if kind == "events":
            event = parse_event(payload, machine)
            archived = store.ingest(self.db, event)
            if archived.outcome is Outcome.STORED:
                self._tell("archived", event)
            self._note(machine, event["incarnation"])
            with self._book_lock:
                self._book.set(machine, event["incarnation"], archived.mark, time.time())
                if archived.outcome is Outcome.DUPLICATE and event["seq"] <= archived.mark:
                    self._book.nudge(machine)
            return archived.outcome
        if kind == "status":
            if payload:  # else a cleared retained status
                self._take_status(machine, parse_status(payload, machine))
            return "statuses"
        raise MalformedEvent(f"not a topic the logbook archives: {topic[:200]!r}")

    def _take_status(self, machine: str, status: dict) -> None:
        """The fleet view's status; an incarnation new to the logbook is asked to send everything."""
        incarnation = status.get("incarnation")
        mark = store.record_status(self.db, machine, status)
        self._tell("status", machine, status)
        if mark is None:
            return
        new = self._note(machine, incarnation)
        with self._book_lock:
            self._book.set(machine, incarnation, mark, time.time(), resend=new)
        if new:
            log.info("%s: asking incarnation %r for every event past seq %d", machine, incarnation, mark)

    def _note(self, machine: str, incarnation: str) -> bool:
        """Say so when an incarnation is new to the logbook (a new machine, a new SD card, or a
        second agent with the same id: noted, never refused); whether it was."""
        with self._book_lock:
            if self._book.knows(machine, incarnation):
                return False
            others = self._book.incarnations(machine)
        if others:
            log.warning("%s: a new incarnation %r beside %s (a new SD card, or another agent with this "
                        "machine id); its events are archived beside the earlier ones", machine, incarnation,
                        ", ".join(repr(other) for other in others))
        else:
            log.info("%s: first heard of (incarnation %r)", machine, incarnation)
        return True

    def _take_names(self, payload: bytes) -> None:
        """Member names from the newest list on `P/members`, for sessions and exports."""
        if not payload:
            return
        digest = hashlib.sha256(payload).hexdigest()
        if digest == self._names_digest:
            return  # the retained list again, at a reconnect
        changed = record_names(self.db, payload)
        if changed:
            log.info("member names: %d changed", changed)
        self._names_digest = digest

    def _tell(self, what: str, *args: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, what)(*args)
            except Exception:
                log.exception("a logbook listener (%s) failed; archiving goes on", type(listener).__name__)

    def _quarantine(self, topic: str, payload: bytes, error: str) -> None:
        store.quarantine(self.db, topic, payload, error)
        self.counts["quarantined"] += 1
        log.warning("%s: quarantined (%s): %r", topic[:200], error, payload[:200])

    # -- marks (our own thread) -------------------------------------------------------------

    def _publish_marks(self) -> None:
        while not self._stop.wait(MARK_EVERY_S):
            if not self.connected.is_set():
                continue
            with self._book_lock:
                due = self._book.take_due(time.time())
            for machine, mark in due:
                self._client.publish(self.topics.archived(machine), json.dumps(mark), qos=1, retain=True)
