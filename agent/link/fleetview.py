"""The fleet as technicians see it: every machine's retained status, read from the broker."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from agent.link.broker import Broker, BrokerUnreachable, connected
from agent.link.topics import DEFAULT_PREFIX, Topics


def fleet_status(broker: Broker, prefix: str = DEFAULT_PREFIX, quiet: float = 0.5, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The retained status of every machine, sorted by machine id. Raises BrokerUnreachable."""
    machines: dict[str, dict[str, Any]] = {}
    subscribed = threading.Event()
    last = [time.monotonic()]

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        last[0] = time.monotonic()
        subscribed.set()

    def on_message(client, userdata, message) -> None:
        last[0] = time.monotonic()
        try:
            status = json.loads(message.payload)
        except ValueError:
            return
        where = topics.parse(message.topic)
        if isinstance(status, dict) and where is not None:
            machines[where[0]] = status

    topics = Topics(prefix)
    with connected(broker, timeout=timeout) as client:
        client.on_subscribe, client.on_message = on_subscribe, on_message
        client.subscribe(topics.status(), qos=1)
        if not subscribed.wait(timeout):
            raise BrokerUnreachable(f"broker {broker} did not answer the subscription")
        # Retained messages follow the SUBACK at once; wait until they stop coming.
        while time.monotonic() - last[0] < quiet:
            time.sleep(0.05)
    return [{**machines[k], "machine": machines[k].get("machine", k)} for k in sorted(machines)]
