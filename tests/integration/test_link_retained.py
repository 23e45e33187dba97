"""read_retained against a real Mosquitto: a large retained list is read whole, none is None at once."""

from __future__ import annotations

import time

import pytest

from agent.link.broker import Broker, BrokerUnreachable
from agent.link.retained import read_retained
from tests.support.helpers import free_port, publish


def test_link_read_retained_returns_the_retained_message_whole(mosquitto) -> None:
    payload = b"x" * (4 * 2**20)  # a 4 MiB list still arrives before the second SUBACK
    publish(mosquitto.port, "fabpass/members", payload, retain=True)
    assert read_retained(Broker.parse(mosquitto.url), "fabpass/members") == payload


def test_link_read_retained_none_without_waiting_out_the_timeout(mosquitto) -> None:
    publish(mosquitto.port, "fabpass/other", b"not this one", retain=True)
    started = time.monotonic()
    assert read_retained(Broker.parse(mosquitto.url), "fabpass/members", timeout=20) is None
    assert time.monotonic() - started < 10  # the answer came from the broker, not the deadline


def test_link_read_retained_unreachable_broker_raises() -> None:
    with pytest.raises(BrokerUnreachable):
        read_retained(Broker("127.0.0.1", free_port()), "fabpass/members", timeout=2)
