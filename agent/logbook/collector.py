"""The collector: archives every machine's events and statuses from MQTT into the logbook.

It holds a persistent MQTT v5 session (a fixed client id, clean_start False,
a session expiry of days) with QoS 1 subscriptions, so the broker queues
events while the collector is down and delivers them when it returns.
Acknowledgements are manual: a message is acknowledged only after its
transaction is committed. If the database fails, the collector stops
acknowledging and reports failure; the broker redelivers what was not
acknowledged when the (restarted) collector reconnects.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.link.broker import Broker, Outage, disconnect, make_client
from agent.link.topics import DEFAULT_PREFIX, Topics
from agent.logbook.events import MalformedEvent, parse_event, parse_status
from agent.logbook.store import Outcome, ingest, open_db, record_status

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "fabpass-logbook"
DEFAULT_SESSION_EXPIRY_S = 14 * 86400
RECONNECT_MAX_S = 30


class Collector:
    """Subscribe, archive, acknowledge. `start()` returns at once; `stop()` is idempotent."""

    def __init__(self, broker: Broker, db_path: str | Path, prefix: str = DEFAULT_PREFIX,
                 client_id: str = DEFAULT_CLIENT_ID,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S) -> None:
        self.broker = broker
        self.prefix = prefix
        self.topics = Topics(prefix)
        self.session_expiry_s = session_expiry_s
        self.db = open_db(db_path, create=True)
        self.connected = threading.Event()
        self.failed = threading.Event()  # the database failed: stop, exit 1, get redelivered
        self.counts = {outcome: 0 for outcome in (*Outcome, "malformed")}
        self._client = make_client(broker, client_id=client_id)
        self._client.manual_ack_set(True)
        self._client.reconnect_delay_set(1, RECONNECT_MAX_S)
        self._outage = Outage(log, broker, f"retrying every {RECONNECT_MAX_S} s at most; "
                                           "meanwhile events wait in the agents' outboxes or on the broker")
        self._client.on_connect_fail = self._outage.on_connect_fail
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._running = False

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30,
                                   clean_start=False, properties=properties)
        self._client.loop_start()
        self._running = True
        log.info("logbook collecting from %s (prefix %r)", self.broker, self.prefix)

    def stop(self) -> None:
        """Disconnect (the broker keeps the session and queues for us) and close the database."""
        if not self._running:
            return
        self._running = False
        disconnect(self._client)
        self.db.close()

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.broker, reason_code)
            return
        self._outage.ended()
        client.subscribe([(self.topics.events(), 1), (self.topics.status(), 1)])
        log.info("connected to %s (session %s)", self.broker,
                 "resumed" if flags.session_present else "new")
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if self._running:
            log.warning("disconnected from %s (%s); reconnecting", self.broker, reason_code)

    def _on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        if self.failed.is_set():
            return  # unacknowledged: redelivered to the next collector
        machine, kind = self.topics.parse(message.topic) or ("", "")
        try:
            if kind == "events":
                outcome = ingest(self.db, parse_event(message.payload, machine))
                self.counts[outcome] += 1
                if outcome is Outcome.SEQ_CONFLICT:
                    log.error("%s: seq already archived with another event_id (agent reset?); "
                              "skipped: %r", message.topic, message.payload[:200])
            elif kind == "status":
                record_status(self.db, machine, parse_status(message.payload, machine))
        except MalformedEvent as err:
            self.counts["malformed"] += 1
            log.warning("%s: skipped a malformed message (%s): %r",
                        message.topic, err, message.payload[:200])
        except sqlite3.Error:
            log.exception("the logbook database failed; stopping without acknowledging")
            self.failed.set()
            return
        client.ack(message.mid, message.qos)
