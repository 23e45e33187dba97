"""agent.link.retained.read_retained on a real Mosquitto."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from agent.link.broker import Broker
from agent.link.retained import read_retained
from tests.support.helpers import publish, wait_for


def broker(mosquitto) -> Broker:
    return Broker("127.0.0.1", mosquitto.port)


def test_retained_reads_the_retained_message(mosquitto):
    publish(mosquitto.port, "fabpass/members", b'{"v": 1}', retain=True)
    assert read_retained(broker(mosquitto), "fabpass/members") == b'{"v": 1}'


def test_retained_reads_a_large_message_whole(mosquitto):
    big = b"x" * (8 * 2**20)
    publish(mosquitto.port, "fabpass/members", big, retain=True)
    assert read_retained(broker(mosquitto), "fabpass/members", timeout=30) == big


def test_retained_none_without_a_retained_message_and_without_waiting_out_the_timeout(mosquitto):
    """The end mark's acknowledgement says nothing is retained: no 60 s wait."""
    publish(mosquitto.port, "fabpass/members", b"", retain=True)  # a cleared topic
    answer: list = []
    reader = threading.Thread(target=lambda: answer.append(read_retained(broker(mosquitto), "fabpass/members", 60)))
    reader.start()
    try:
        wait_for(lambda: answer, 10, "the answer, well before the 60 s timeout")
    finally:
        reader.join(70)
    assert answer == [None]
    assert read_retained(broker(mosquitto), "fabpass/machines/nowhere/status", 60) is None


def test_retained_an_account_that_may_not_read_sees_nothing(mosquitto_factory, tmp_path: Path):
    """Mosquitto acknowledges a subscription its ACL forbids and delivers nothing."""
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "laser-1", "pw"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "fabpass-admin", "pw"], check=True)
    acl.write_text("user fabpass-admin\ntopic readwrite fabpass/#\n"
                   "user laser-1\ntopic read fabpass/machines/laser-1/commands\n")
    server = mosquitto_factory(f"password_file {passwd}\nacl_file {acl}\n", anonymous=False)
    admin = Broker("127.0.0.1", server.port, username="fabpass-admin", password="pw")
    from agent.link.publish import publish_acknowledged

    publish_acknowledged(admin, "fabpass/members", b"list", retain=True)
    assert read_retained(admin, "fabpass/members") == b"list"
    assert read_retained(Broker("127.0.0.1", server.port, username="laser-1", password="pw"),
                         "fabpass/members", 60) is None


def test_retained_unreachable_broker_raises():
    import pytest

    from agent.link.broker import BrokerUnreachable
    from tests.support.helpers import free_port

    with pytest.raises(BrokerUnreachable):
        read_retained(Broker("127.0.0.1", free_port()), "fabpass/members", timeout=2)
