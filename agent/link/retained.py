"""Reading a retained message once: the member list the broker holds, say."""

from __future__ import annotations

import threading

from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.link.broker import Broker, BrokerUnreachable, connected


def read_retained(broker: Broker, topic: str, timeout: float = 15.0) -> bytes | None:
    """The retained message on `topic`, or None when the broker holds none.

    Subscribes twice: the second time asking for no retained message. The
    broker answers in order, so once the second SUBACK is in, a retained
    message (sent after the first) has arrived, however large: no waiting for
    a quiet spell that a slow link could outlast. Raises BrokerUnreachable.
    """
    found: list[bytes] = []
    acked: set[int] = set()
    answered = threading.Condition()

    def on_message(client, userdata, message) -> None:
        if message.retain and not found:
            found.append(message.payload)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        with answered:
            acked.add(mid)
            answered.notify_all()

    with connected(broker, timeout=timeout) as client:
        client.on_message, client.on_subscribe = on_message, on_subscribe
        client.subscribe(topic, options=SubscribeOptions(qos=1))
        _, mid = client.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=2))
        with answered:
            if not answered.wait_for(lambda: mid in acked, timeout):
                raise BrokerUnreachable(f"broker {broker} did not answer the subscription to {topic}")
    return found[0] if found else None
