"""A plain subscriber to every machine's events: what the broker delivered, and when."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.devtools.fleet.check import Key, Row
from agent.link.broker import Broker, disconnect, make_client
from agent.link.topics import Topics


class Witness:
    """QoS 1 with a persistent session (it also gets what arrives during a broker restart).

    `first_seen[(machine, seq)]` is the monotonic time of the first delivery (of any incarnation:
    for timing), `distinct` how many events it received.
    """

    def __init__(self, broker: Broker, prefix: str, session_expiry_s: int = 300) -> None:
        self.broker = broker
        self.topic = Topics(prefix).events()
        self.session_expiry_s = session_expiry_s
        self.first_seen: dict[tuple[str, int], float] = {}
        self.deliveries = 0
        self._ids: dict[Key, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self._client = make_client(broker, f"fabpass-fleet-witness-{uuid.uuid4().hex[:12]}")
        self._client.reconnect_delay_set(0.2, 2)
        self._client.on_connect = lambda c, u, f, rc, p: rc.is_failure or c.subscribe(self.topic, qos=1)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=10,
                                   clean_start=False, properties=props)
        self._client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"cannot subscribe to {self.topic} on {self.broker}")

    def stop(self) -> None:
        """Disconnect and end the session (nothing is left queued on the broker for us)."""
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        disconnect(self._client, props)

    def _on_message(self, client, userdata, message) -> None:
        now = time.monotonic()
        try:
            event = json.loads(message.payload)
            key = (str(event["machine"]), str(event.get("incarnation", "")), int(event["seq"]))
            event_id = str(event["event_id"])
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self.deliveries += 1
            self.first_seen.setdefault((key[0], key[2]), now)
            self._ids[key].add(event_id)

    @property
    def distinct(self) -> int:
        with self._lock:
            return len(self._ids)

    def rows(self) -> list[Row]:
        with self._lock:
            return [(m, i, s, e) for (m, i, s), ids in self._ids.items() for e in ids]
