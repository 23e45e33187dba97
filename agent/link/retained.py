"""Reading one retained message, for the admin's tools: the member list before a new
one is published, a machine's status before a command is sent to it."""

from __future__ import annotations

import threading

from agent.link.broker import Broker, BrokerUnreachable, connected

# Subscribed to after the topic: its acknowledgement follows whatever the broker
# retains for the topic (Mosquitto queues the retained message right behind the
# first SUBACK, and TCP keeps the order), so a topic that retains nothing is known
# at once instead of after a timeout. Nothing is ever published there.
END_MARK = "fabpass-end-of-retained"


def read_retained(broker: Broker, topic: str, timeout: float = 3.0) -> bytes | None:
    """The message the broker retains on `topic`, or None when it holds none (or an
    empty one: a cleared topic). Waits up to `timeout` seconds for it once
    subscribed. Raises BrokerUnreachable.

    An account the broker's ACL does not let read `topic` sees None too:
    Mosquitto acknowledges the subscription and delivers nothing."""
    changed = threading.Condition()
    acked: set[int] = set()  # SUBACKs may come before subscribe() returns the mid
    payload: list[bytes] = []

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        with changed:
            acked.add(mid)
            changed.notify_all()

    def on_message(client, userdata, message) -> None:
        with changed:
            if message.topic == topic and not payload:
                payload.append(message.payload)
                changed.notify_all()

    with connected(broker, timeout=max(timeout, 5.0)) as client:
        client.on_subscribe, client.on_message = on_subscribe, on_message
        mid = client.subscribe(topic, qos=1)[1]
        end = client.subscribe(f"{topic}/{END_MARK}", qos=0)[1]
        with changed:
            if not changed.wait_for(lambda: mid in acked, max(timeout, 5.0)):
                raise BrokerUnreachable(f"broker {broker} did not answer the subscription to {topic}")
            changed.wait_for(lambda: payload or end in acked, timeout)
            found = payload[0] if payload else None
    return found or None
