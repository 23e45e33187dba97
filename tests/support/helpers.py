"""Shared test helpers: waiting on conditions with a deadline, free ports, MQTT clients.

The brokers are real: `agent.devtools.localbroker.LocalBroker` (see the fixtures in conftest.py)."""

from __future__ import annotations

from agent.devtools.localbroker import free_port, port_open  # noqa: F401  (re-exported for tests)
from agent.devtools.wait import wait_for  # noqa: F401  (re-exported for tests)
from agent.link.broker import disconnect


def read_line(stream, timeout: float = 10.0) -> str:
    """One line from a subprocess pipe, or fail after `timeout` seconds."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise AssertionError(f"no line within {timeout}s")
    return stream.readline()


class Collector:
    """A real MQTT subscriber that keeps every message it receives on `topic`.

    With `client_id` it keeps a persistent session (clean start off), so it
    also gets what was published while the broker was restarting.
    """

    def __init__(self, port: int, topic: str, client_id: str = "") -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each message
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, keepalive=10, clean_start=not client_id, properties=props)
        self.client.loop_start()
        wait_for(self.subscribed.is_set, 10, f"subscription to {topic}")

    def _on_message(self, client, userdata, message) -> None:
        import time

        with self._lock:
            self.messages.append((message.topic, message.payload, message.retain))
            self.arrivals.append(time.monotonic())

    def payloads(self) -> list[dict]:
        import json

        with self._lock:
            return [json.loads(p) for _, p, _ in self.messages if p]

    def timed(self) -> list[tuple[float, dict]]:
        """(arrival, payload as JSON) of each message."""
        import json

        with self._lock:
            return [(t, json.loads(p)) for t, (_, p, _) in zip(self.arrivals, self.messages) if p]

    def close(self) -> None:
        disconnect(self.client)


def publish(port: int, topic: str, payload: bytes | str, retain: bool = False) -> None:
    """Publish one QoS 1 message and wait for the broker's acknowledgement."""
    from agent.link.broker import Broker
    from agent.link.publish import publish_acknowledged

    publish_acknowledged(Broker("127.0.0.1", port), topic, payload, retain=retain)
