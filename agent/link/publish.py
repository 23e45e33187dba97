"""One-shot publishing for the admin's tools: publish, wait for the broker's acknowledgement."""

from __future__ import annotations

import threading

from agent.link.broker import Broker, BrokerUnreachable, connected


class PublishError(RuntimeError):
    pass


def publish_acknowledged(broker: Broker, topic: str, payload: bytes, client_id: str = "",
                         retain: bool = False, timeout: float = 15.0) -> None:
    """Connect, publish with QoS 1, wait for the PUBACK, disconnect; PublishError on any failure."""
    try:
        with connected(broker, client_id, timeout) as client:
            acked = threading.Event()
            result: list = []

            def on_publish(client, userdata, mid, reason_code, properties) -> None:
                result.append(reason_code)
                acked.set()

            client.on_publish = on_publish
            client.publish(topic, payload, qos=1, retain=retain)
            if not acked.wait(timeout):
                raise PublishError(f"broker {broker} did not acknowledge the message on {topic}")
            if result[0].is_failure:
                raise PublishError(f"broker {broker} refused the message on {topic}: {result[0]} "
                                   "(is this account allowed to publish there?)")
    except BrokerUnreachable as err:
        raise PublishError(str(err)) from None
