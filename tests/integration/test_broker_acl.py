"""The broker's ACL (deploy/mosquitto/acl) on a real mosquitto, with accounts made
by deploy/mosquitto/add-machine and mosquitto_passwd, probed with paho clients.

A forbidden publish is proven lost, not merely slow: the observer waits (with a
deadline) for a marker sent after the forbidden message was acknowledged by the
broker, which routes messages in the order it acknowledges them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.core.timespec import rfc3339
from agent.devtools.localbroker import LocalBroker as Mosquitto
from agent.link.broker import Broker, make_client
from tests.support import ROOT
from tests.support.helpers import free_port, port_open, wait_for

ACL = ROOT / "deploy" / "mosquitto" / "acl"
ADD_MACHINE = ROOT / "deploy" / "mosquitto" / "add-machine"
NOT_AUTHORISED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10  # accepted; nobody listens
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Session:
    """A paho MQTT v5 client that records what it receives and how the broker answers."""

    def __init__(self, broker: Broker, client_id: str = "") -> None:
        self.broker = broker
        self.client = make_client(broker, client_id=client_id)
        self.connected: ReasonCode | None = None
        self.received: list[tuple[str, bytes]] = []
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = reason_code

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.received.append((message.topic, message.payload))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acks[mid] = reason_code

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subacks[mid] = reason_codes

    def connect(self) -> ReasonCode:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        return wait_for(lambda: self.connected, 10, f"CONNACK for {self.broker.username}")

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1; the SUBACK reason code's value."""
        _, mid = self.client.subscribe(topic, qos=1)
        return wait_for(lambda: self.subacks.get(mid), 5, f"SUBACK for {topic}")[0].value

    def publish(self, topic: str, payload: str, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK reason code's value (0 accepted, 0x87 not authorised)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return wait_for(lambda: self.acks.get(info.mid), 5, f"PUBACK for {topic}").value

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload in self.received if t == topic]

    def wait_for_message(self, topic: str, payload: str) -> None:
        wait_for(lambda: payload.encode() in self.payloads(topic), 5, f"{payload!r} on {topic}")

@dataclass
class Lab:
    broker: Mosquitto
    passwords: dict[str, str]
    connect: Callable[..., Session]


def _add_account(passwd_file: Path, username: str, password: str) -> None:
    create = [] if passwd_file.exists() else ["-c"]
    subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd_file), username, password], check=True)


@pytest.fixture
def lab(mosquitto_factory, tmp_path: Path) -> Iterator[Lab]:
    """A mosquitto with the shipped ACL; machines laser-1 and cnc-1 made by add-machine."""
    passwd_file = tmp_path / "passwd"
    passwords = {"fabpass-admin": "admin-secret", "fabpass-logbook": "logbook-secret", "homeassistant": "ha-secret"}
    for user, password in passwords.items():
        _add_account(passwd_file, user, password)
    for machine in ("laser-1", "cnc-1"):
        done = subprocess.run(
            [str(ADD_MACHINE), "--passwd-file", str(passwd_file), "--out", str(tmp_path), "--no-reload", machine],
            check=True, capture_output=True, text=True)
        passwords[machine] = done.stdout.strip()
    broker = mosquitto_factory(f"password_file {passwd_file}\nacl_file {ACL}\n", anonymous=False)
    sessions: list[Session] = []

    def connect(username: str | None, password: str | None = None) -> Session:
        if username and password is None:
            password = passwords[username]
        session = Session(Broker("127.0.0.1", broker.port, username=username, password=password))
        sessions.append(session)
        rc = session.connect()
        assert not rc.is_failure, f"{username} could not connect: {rc}"
        return session

    yield Lab(broker, passwords, connect)
    for session in sessions:
        session.client.disconnect()
    for session in sessions:  # apart: each network thread takes up to a second to notice
        session.client.loop_stop()


@pytest.fixture
def admin(lab: Lab) -> Session:
    """The admin, watching everything under fabpass/."""
    session = lab.connect("fabpass-admin")
    assert session.subscribe("fabpass/#") == 1
    return session


def test_broker_acl_add_machine_password_file_is_private_and_works(lab: Lab, tmp_path: Path) -> None:
    saved = tmp_path / "laser-1.password"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert saved.read_text().strip() == lab.passwords["laser-1"]
    assert len(lab.passwords["laser-1"]) >= 32
    lab.connect("laser-1")


def test_broker_acl_machine_publishes_its_own_events_and_status(lab: Lab, admin: Session) -> None:
    logbook = lab.connect("fabpass-logbook")
    assert logbook.subscribe("fabpass/machines/+/events") == 1
    assert logbook.subscribe("fabpass/machines/+/status") == 1
    laser = lab.connect("laser-1")
    assert laser.publish("fabpass/machines/laser-1/events", "event-1") == 0
    assert laser.publish("fabpass/machines/laser-1/status", "idle", retain=True) == 0
    for observer in (admin, logbook):
        observer.wait_for_message("fabpass/machines/laser-1/events", "event-1")
        observer.wait_for_message("fabpass/machines/laser-1/status", "idle")


def test_broker_acl_machine_reads_members_and_its_own_commands(lab: Lab, admin: Session) -> None:
    assert admin.publish("fabpass/members", "snapshot-1", retain=True) == 0
    laser = lab.connect("laser-1")
    assert laser.subscribe("fabpass/members") == 1
    assert laser.subscribe("fabpass/machines/laser-1/commands") == 1
    laser.wait_for_message("fabpass/members", "snapshot-1")  # the retained list
    assert admin.publish("fabpass/machines/laser-1/commands", "lock") == 0
    laser.wait_for_message("fabpass/machines/laser-1/commands", "lock")


@pytest.mark.parametrize("topic", [
    "fabpass/machines/cnc-1/events",      # forging another machine's events
    "fabpass/machines/cnc-1/status",
    "fabpass/members",                    # publishing a member list
    "fabpass/machines/cnc-1/commands",    # commanding another machine
    "fabpass/machines/laser-1/commands",  # or itself
    "fabpass/machines/laser-1/archived",  # saying its own events are archived (they would be forgotten)
    "fabpass/machines/cnc-1/archived",
])
def test_broker_acl_machine_cannot_publish_outside_its_own_topics(lab: Lab, admin: Session, topic: str) -> None:
    laser = lab.connect("laser-1")
    assert laser.publish(topic, "forged") == NOT_AUTHORISED
    assert laser.publish("fabpass/machines/laser-1/events", "marker") == 0
    admin.wait_for_message("fabpass/machines/laser-1/events", "marker")
    assert b"forged" not in admin.payloads(topic)


def test_broker_acl_machine_cannot_command_another_machine(lab: Lab, admin: Session) -> None:
    cnc = lab.connect("cnc-1")
    assert cnc.subscribe("fabpass/machines/cnc-1/commands") == 1
    laser = lab.connect("laser-1")
    assert laser.publish("fabpass/machines/cnc-1/commands", "unlock") == NOT_AUTHORISED
    assert admin.publish("fabpass/machines/cnc-1/commands", "marker") == 0
    cnc.wait_for_message("fabpass/machines/cnc-1/commands", "marker")
    assert cnc.payloads("fabpass/machines/cnc-1/commands") == [b"marker"]


@pytest.mark.parametrize("topic", [
    "fabpass/machines/cnc-1/commands",
    "fabpass/machines/cnc-1/events",
    "fabpass/machines/cnc-1/status",
    "fabpass/machines/cnc-1/archived",
])
def test_broker_acl_machine_cannot_read_another_machines_topics(lab: Lab, admin: Session, topic: str) -> None:
    laser = lab.connect("laser-1")
    assert laser.subscribe("fabpass/machines/laser-1/commands") == 1
    laser.subscribe(topic)  # mosquitto may grant it; what matters is what is delivered
    publisher = {"commands": admin, "archived": lab.connect("fabpass-logbook")}.get(
        topic.rsplit("/", 1)[1]) or lab.connect("cnc-1")
    assert publisher.publish(topic, "secret", retain=True) == 0
    assert admin.publish("fabpass/machines/laser-1/commands", "marker", retain=True) == 0
    laser.wait_for_message("fabpass/machines/laser-1/commands", "marker")
    assert laser.payloads(topic) == []
    # Nor the retained copy, for a client that subscribes later: the broker
    # sends retained messages in the order of the subscriptions.
    late = lab.connect("laser-1")
    late.subscribe(topic)
    late.subscribe("fabpass/machines/laser-1/commands")
    late.wait_for_message("fabpass/machines/laser-1/commands", "marker")
    assert late.payloads(topic) == []


def test_broker_acl_machine_will_is_published_only_on_its_own_status(lab: Lab, admin: Session) -> None:
    for machine, will_topic in (("laser-1", "fabpass/machines/laser-1/status"),
                                ("cnc-1", "fabpass/machines/laser-1/status")):
        session = Session(Broker("127.0.0.1", lab.broker.port, username=machine, password=lab.passwords[machine]))
        session.client.will_set(will_topic, f"offline-by-{machine}", qos=1, retain=True)
        assert not session.connect().is_failure
        # MQTT v5 reason code 0x04: disconnect and have the broker send the will.
        session.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        session.client.loop_stop()
    admin.wait_for_message("fabpass/machines/laser-1/status", "offline-by-laser-1")
    laser = lab.connect("laser-1")
    assert laser.publish("fabpass/machines/laser-1/events", "marker") == 0
    admin.wait_for_message("fabpass/machines/laser-1/events", "marker")
    assert b"offline-by-cnc-1" not in admin.payloads("fabpass/machines/laser-1/status")


def test_broker_acl_admin_publishes_members_and_commands(lab: Lab, admin: Session) -> None:
    assert admin.publish("fabpass/members", "snapshot-2", retain=True) == 0
    assert admin.publish("fabpass/machines/cnc-1/commands", "unlock") == 0
    admin.wait_for_message("fabpass/members", "snapshot-2")
    admin.wait_for_message("fabpass/machines/cnc-1/commands", "unlock")


@pytest.mark.parametrize("topic", [
    "fabpass/machines/laser-1/events",
    "fabpass/machines/laser-1/status",
    "fabpass/machines/fabpass-logbook/events",  # nor as a machine of its own name
    "fabpass/members",
    "fabpass/machines/laser-1/commands",
])
def test_broker_acl_logbook_publishes_nothing_but_marks(lab: Lab, admin: Session, topic: str) -> None:
    logbook = lab.connect("fabpass-logbook")
    assert logbook.publish(topic, "forged") == NOT_AUTHORISED
    assert admin.publish("fabpass/machines/laser-1/commands", "marker") == 0
    admin.wait_for_message("fabpass/machines/laser-1/commands", "marker")
    assert b"forged" not in admin.payloads(topic)


def test_broker_acl_logbook_reads_members_but_not_commands(lab: Lab, admin: Session) -> None:
    """The logbook reads the member list for names (and its retained copy), never the commands."""
    assert admin.publish("fabpass/members", "snapshot", retain=True) == 0
    logbook = lab.connect("fabpass-logbook")
    assert logbook.subscribe("fabpass/members") == 1
    logbook.subscribe("fabpass/machines/laser-1/commands")
    assert logbook.subscribe("fabpass/machines/+/events") == 1
    logbook.wait_for_message("fabpass/members", "snapshot")
    assert admin.publish("fabpass/machines/laser-1/commands", "lock") == 0
    laser = lab.connect("laser-1")
    assert laser.publish("fabpass/machines/laser-1/events", "marker") == 0
    logbook.wait_for_message("fabpass/machines/laser-1/events", "marker")
    assert logbook.payloads("fabpass/machines/laser-1/commands") == []


@pytest.mark.parametrize("topic, allowed", [
    ("homeassistant/binary_sensor/fabpass/laser-1_in_use/config", True),
    ("homeassistant/event/fabpass/laser-1_usage/config", True),
    ("homeassistant/light/kitchen/config", False),          # another integration's device
    ("homeassistant/binary_sensor/fabpass/laser-1_in_use/state", False),
])
def test_broker_acl_logbook_publishes_only_fabpass_home_assistant_discovery(lab: Lab, admin: Session,
                                                                            topic: str, allowed: bool) -> None:
    logbook = lab.connect("fabpass-logbook")
    accepted = (0, NO_MATCHING_SUBSCRIBERS)
    assert logbook.publish(topic, "config", retain=True) in (accepted if allowed else (NOT_AUTHORISED,))
    assert admin.publish("fabpass/machines/laser-1/commands", "marker") == 0
    admin.wait_for_message("fabpass/machines/laser-1/commands", "marker")
    ha = lab.connect("homeassistant")
    ha.subscribe(topic)
    assert ha.subscribe("homeassistant/#") == 1
    if allowed:
        ha.wait_for_message(topic, "config")
    else:
        assert logbook.publish("homeassistant/sensor/fabpass/laser-1_member/config", "marker", retain=True) in accepted
        ha.wait_for_message("homeassistant/sensor/fabpass/laser-1_member/config", "marker")
        assert ha.payloads(topic) == []


def test_broker_acl_home_assistant_reads_machines_but_never_the_member_list(lab: Lab, admin: Session) -> None:
    assert admin.publish("fabpass/members", "names and badges", retain=True) == 0
    ha = lab.connect("homeassistant")
    ha.subscribe("fabpass/members")
    assert ha.subscribe("fabpass/machines/+/status") == 1
    assert ha.subscribe("fabpass/machines/+/events") == 1
    laser = lab.connect("laser-1")
    assert laser.publish("fabpass/machines/laser-1/status", "idle", retain=True) == 0
    assert laser.publish("fabpass/machines/laser-1/events", "event") == 0
    ha.wait_for_message("fabpass/machines/laser-1/status", "idle")
    ha.wait_for_message("fabpass/machines/laser-1/events", "event")
    assert ha.payloads("fabpass/members") == []
    for topic in ("fabpass/members", "fabpass/machines/laser-1/commands", "fabpass/machines/laser-1/status"):
        assert ha.publish(topic, "forged") == NOT_AUTHORISED


def test_broker_acl_the_logbook_marks_and_each_machine_reads_its_own(lab: Lab, admin: Session) -> None:
    """The archived mark: only the logbook writes it; a machine reads its own (retained), and
    its own status, where another live agent with its id shows."""
    logbook = lab.connect("fabpass-logbook")
    assert logbook.publish("fabpass/machines/laser-1/archived", "mark-laser", retain=True) == 0
    assert logbook.publish("fabpass/machines/cnc-1/archived", "mark-cnc", retain=True) == 0
    assert admin.publish("fabpass/machines/laser-1/archived", "forged") == NOT_AUTHORISED
    laser = lab.connect("laser-1")
    assert laser.subscribe("fabpass/machines/laser-1/archived") == 1
    assert laser.subscribe("fabpass/machines/laser-1/status") == 1
    laser.wait_for_message("fabpass/machines/laser-1/archived", "mark-laser")
    twin = lab.connect("laser-1")
    assert twin.publish("fabpass/machines/laser-1/status", "twin-alive", retain=True) == 0
    laser.wait_for_message("fabpass/machines/laser-1/status", "twin-alive")
    assert laser.payloads("fabpass/machines/laser-1/archived") == [b"mark-laser"]


@pytest.mark.parametrize("username,password", [
    (None, None),                  # anonymous
    ("laser-1", "wrong-password"),
    ("nobody", "whatever"),
])
def test_broker_acl_refuses_unknown_clients(lab: Lab, username: str | None, password: str | None) -> None:
    session = Session(Broker("127.0.0.1", lab.broker.port, username=username, password=password))
    try:
        assert session.connect().is_failure
    finally:
        session.client.loop_stop()


@pytest.fixture
def shipped_broker(tmp_path: Path) -> Iterator[tuple[int, int, Path, dict[str, str]]]:
    """The shipped drop-in config, in a layout like Debian's (a main config that
    includes conf.d), with /etc/mosquitto/ moved to tmp_path, the two listeners on
    free loopback ports, and a certificate from deploy/mosquitto/lab-ca."""
    plain_port, tls_port = free_port(), free_port()
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    rewritten = (conf.replace("/etc/mosquitto/", f"{tmp_path}/")
                 .replace("listener 1883 127.0.0.1\n", f"listener {plain_port} 127.0.0.1\n")
                 .replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n"))
    settings = [line for line in rewritten.splitlines() if line and not line.startswith("#")]
    assert not [line for line in settings if "/etc/" in line or line.split()[:2] in (["listener", "1883"], ["listener", "8883"])], \
        "the shipped config changed shape: update this test's rewriting"
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "fabpass.conf").write_text(rewritten)
    main = tmp_path / "mosquitto.conf"
    main.write_text(f"persistence_location {tmp_path}/\nlog_dest stderr\n"
                    + ("user root\n" if os.geteuid() == 0 else "")
                    + f"include_dir {tmp_path}/conf.d\n")
    (tmp_path / "fabpass.acl").write_bytes(ACL.read_bytes())
    subprocess.run([str(ROOT / "deploy" / "mosquitto" / "lab-ca"), "--dir", str(tmp_path / "certs"),
                    "localhost", "127.0.0.1"], check=True, capture_output=True)
    password = subprocess.run(
        [str(ADD_MACHINE), "--passwd-file", str(tmp_path / "passwd"), "--out", str(tmp_path), "--no-reload", "laser-1"],
        check=True, capture_output=True, text=True).stdout.strip()
    with open(tmp_path / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(main)], stdout=log, stderr=log)
    try:
        wait_for(lambda: (port_open(plain_port) and port_open(tls_port)) or proc.poll() is not None,
                 10, "mosquitto to listen")
        assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
        yield plain_port, tls_port, tmp_path / "certs" / "ca.crt", {"laser-1": password}
    finally:
        proc.terminate()
        proc.wait(10)


def test_broker_config_serves_machines_over_tls_with_the_lab_ca(shipped_broker) -> None:
    _, tls_port, ca_file, passwords = shipped_broker
    machine = Broker("localhost", tls_port, tls=True, username="laser-1", password=passwords["laser-1"],
                     ca_file=str(ca_file))
    session = Session(machine)
    try:
        assert not session.connect().is_failure
        assert session.publish("fabpass/machines/laser-1/events", "over-tls") == NO_MATCHING_SUBSCRIBERS
        assert session.publish("fabpass/members", "forged") == NOT_AUTHORISED
    finally:
        session.client.disconnect()
        session.client.loop_stop()


def test_broker_config_refuses_anonymous_on_both_listeners(shipped_broker) -> None:
    plain_port, tls_port, ca_file, _ = shipped_broker
    for broker in (Broker("127.0.0.1", plain_port),
                   Broker("localhost", tls_port, tls=True, ca_file=str(ca_file))):
        session = Session(broker)
        try:
            assert session.connect().is_failure
        finally:
            session.client.loop_stop()


def test_broker_config_tls_refuses_a_broker_outside_the_lab_ca(shipped_broker, tmp_path: Path) -> None:
    _, tls_port, _, passwords = shipped_broker
    subprocess.run([str(ROOT / "deploy" / "mosquitto" / "lab-ca"), "--dir", str(tmp_path / "other-ca"),
                    "localhost"], check=True, capture_output=True)
    stranger = Broker("localhost", tls_port, tls=True, username="laser-1", password=passwords["laser-1"],
                      ca_file=str(tmp_path / "other-ca" / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        make_client(stranger).connect(stranger.host, stranger.port)


def test_broker_acl_lets_the_real_agent_do_its_job(lab: Lab, admin: Session, tmp_path: Path) -> None:
    """`fabpass run --simulate` with its add-machine account: it publishes its
    status and events, and receives the admin's command, all through the ACL."""
    secret = tmp_path / "mqtt.password"
    secret.write_text(lab.passwords["laser-1"] + "\n")
    config = tmp_path / "agent.toml"
    config.write_text('[machine]\nid = "laser-1"\ninduction = "laser"\n[reader]\ntype = "simulated"\n'
                      '[relay]\npin = 17\nactive_high = false\n'
                      f'[storage]\ndir = "{tmp_path}/state"\n'
                      f'[mqtt]\nurl = "{lab.broker.url}"\nusername = "laser-1"\npassword_file = "{secret}"\n')
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config), "--simulate"],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    events = "fabpass/machines/laser-1/events"

    def event_types() -> list[str]:
        return [json.loads(payload)["type"] for payload in admin.payloads(events)]

    try:
        wait_for(lambda: "agent_started" in event_types(), 15, f"agent_started ({log.read_text()})")
        wait_for(lambda: admin.payloads("fabpass/machines/laser-1/status"), 5, "the agent's status")
        sent = rfc3339(dt.datetime.now(dt.timezone.utc))
        command = json.dumps({"v": 1, "command": "lock", "reason": "maintenance", "by": "tech", "ts": sent})
        assert admin.publish("fabpass/machines/laser-1/commands", command) == 0
        wait_for(lambda: "machine_locked" in event_types(), 10, "machine_locked")
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(10)
    assert agent.returncode == 0, log.read_text()
