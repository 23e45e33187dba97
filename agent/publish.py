"""One-shot publishing for the admin's tools: publish, wait for the broker's acknowledgement."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from agent.broker import Broker, make_client


class PublishError(RuntimeError):
    pass


def publish_acknowledged(broker: Broker, topic: str, payload: bytes, client_id: str = "",
                     retain: bool = False, timeout: float = 15.0) -> None:
    """Connect, publish with QoS 1, wait for the PUBACK, disconnect; PublishError on any failure."""
    client = make_client(broker, client_id)
    connected = threading.Event()
    failure: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            failure.append(f"broker {broker} refused the connection: {reason_code}")
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as err:
        raise PublishError(f"cannot reach broker {broker}: {err}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout) or failure:
            raise PublishError(failure[0] if failure else f"no answer from broker {broker}")
        acked = threading.Event()
        result: list = []

        def on_publish(client, userdata, mid, reason_code, properties) -> None:
            result.append(reason_code)
            acked.set()

        client.on_publish = on_publish
        info = client.publish(topic, payload, qos=1, retain=retain)
        if not acked.wait(timeout):
            raise PublishError(f"broker {broker} did not acknowledge the message on {topic}")
        if result[0].is_failure:
            raise PublishError(f"broker {broker} refused the message on {topic}: {result[0]} "
                               "(is this account allowed to publish there?)")
        del info
    finally:
        client.disconnect()
        client.loop_stop()
