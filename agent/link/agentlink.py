"""The agent's MQTT link: sends the outbox, publishes status, receives lists, commands,
the logbook's archived mark, and other agents' statuses under its machine id.

paho's network thread only hands messages over: callbacks never block and
never touch SQLite. A publisher thread of our own sends the outbox in `seq`
order with QoS 1. The broker's acknowledgement is not the end of an event:
the outbox keeps it until the logbook's archived mark covers it, and this
link sends again what the mark does not cover when it connects, when the
logbook asks (`resend`), and when the mark stays behind what was sent for
`resend_after` (then at doubling intervals, up to an hour, while a logbook
stays away). Resent events keep their `event_id`.

The client id carries the storage's incarnation, so that two agents given
the same machine id (a copied config) do not throw each other off the
broker; each sees the other's live status on its own status topic and says
so (`machine_id_conflict`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core.model import BadBadge, normalise_badge
from agent.link import commands
from agent.link.broker import Broker, Outage, disconnect, make_client
from agent.link.topics import DEFAULT_PREFIX, Topics

log = logging.getLogger("fabpass.mqtt")


def quiet_not_connected(record: logging.LogRecord) -> bool:
    """paho 2 logs "Client is not connected" as an error when its network thread runs
    without a socket: once after our own disconnect() (state MQTT_CS_DISCONNECTED), and
    after every failed reconnection attempt (MQTT_CS_CONNECTING), that is every few
    seconds for as long as the broker is down. The link says both in words of its own,
    once; any other state (a lost connection, MQTT_CS_CONNECTION_LOST) is still logged."""
    message = record.getMessage()
    return not ("Client is not connected" in message
                and ("MQTT_CS_DISCONNECTED" in message or "MQTT_CS_CONNECTING" in message))


PAHO_LOG = logging.getLogger("paho")
PAHO_LOG.addFilter(quiet_not_connected)

RECONNECT_MAX_S = 5
SESSION_EXPIRY_S = 7 * 24 * 3600  # commands sent while the Pi was unreachable wait this long
WINDOW = 200  # events published and not yet acknowledged
BATCH = 100
RESEND_MAX_S = 3600.0  # a logbook that stays away gets the backlog again at most this rarely


class EventSource(Protocol):
    """The agent's outbox, as the link sends it."""

    incarnation: str

    def pending(self, after_seq: int = 0, limit: int = 500) -> list[tuple[int, str]]: ...

    def acknowledged(self, seq: int) -> None: ...

    def archived(self, seq: int) -> bool: ...

    @property
    def mark(self) -> int | None: ...

    @property
    def unacknowledged(self) -> int: ...


class LinkHandler(Protocol):
    """What the link hands to the agent that owns it, from the link's threads.

    `list_arrived` runs on the link's own list thread and may take its time;
    the others are called from paho's network thread and must not block.
    """

    def connected(self) -> None: ...

    def twin_alive(self, incarnation: str) -> None:
        """Another live agent, of that incarnation, uses this machine id."""

    def twin_gone(self, incarnation: str) -> None:
        """That other agent went offline."""

    def list_arrived(self, payload: bytes) -> None: ...

    def command_arrived(self, command: commands.Command) -> None: ...

    def command_refused(self, error: str) -> None: ...

    def simulated_tap(self, badge: str) -> None: ...


@dataclass(frozen=True)
class LinkSettings:
    """What the link needs from the machine's config."""

    broker: Broker
    machine: str
    prefix: str = DEFAULT_PREFIX
    keepalive: int = 30
    public_key: str | None = None  # commands must be signed by its private key
    simulated: bool = False  # taps on sim/tap are accepted
    drain_s: float = 5.0  # at close, while connected, the outbox may drain this long
    resend_after: float = 60.0  # the mark stays behind what was sent this long: send it again


def offline_status(machine: str, incarnation: str) -> bytes:
    return json.dumps({"v": 1, "machine": machine, "state": "offline", "incarnation": incarnation}).encode()


def client_id(machine: str, incarnation: str) -> str:
    """One per storage: two agents given the same machine id never take each other's session.
    An agent of the empty incarnation (an outbox older than incarnations) keeps its old id."""
    return f"fabpass-{machine}-{incarnation}" if incarnation else f"fabpass-{machine}"


def own_mark(payload: bytes, machine: str, incarnation: str) -> tuple[int | None, bool]:
    """(this incarnation's seq, whether a resend is asked) from a message on the archived
    topic; (None, False) when it says nothing of this incarnation or is not a mark."""
    try:
        mark = json.loads(payload)
    except ValueError:
        return None, False
    if not isinstance(mark, dict) or mark.get("v") != 1 or mark.get("machine") != machine:
        return None, False
    marks = mark.get("marks")
    if isinstance(marks, dict) and incarnation in marks:
        seq = marks[incarnation]
    else:
        seq = mark.get("seq") if mark.get("incarnation") == incarnation else None
    if type(seq) is not int or seq < 0:
        return None, False
    return seq, mark.get("resend") is True


class AgentLink:
    """Created with its settings; `start(outbox, handler)` connects and drains."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.broker = settings.broker
        self.topics = Topics(settings.prefix)
        self._outage = Outage(log, self.broker, f"retrying every {RECONNECT_MAX_S} s at most, events wait in the outbox")
        self.client: mqtt.Client | None = None  # made at start(), once the incarnation is known
        self._downgrade = threading.Event()
        self.connected = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._lists: queue.Queue[bytes] = queue.Queue(maxsize=1)
        self._marks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()  # (seq, resend asked)
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._sent_up_to = 0
        self._acked_up_to = 0  # the highest seq the broker has acknowledged
        self._send_again = threading.Event()  # from the mark on: at a connection, or asked
        self._behind_since: float | None = None  # monotonic: the mark has stayed behind what was sent since
        self._resend_wait = settings.resend_after
        self._threads = [threading.Thread(target=self._publisher, name="mqtt-publisher", daemon=True),
                         threading.Thread(target=self._list_worker, name="members-sync", daemon=True)]
        self._outbox: EventSource | None = None
        self._handler: LinkHandler | None = None
        self._public_key = None
        if settings.public_key:
            from agent.signing import load_public_key

            self._public_key = load_public_key(settings.public_key)

    @property
    def incarnation(self) -> str:
        return self._outbox.incarnation if self._outbox is not None else ""

    def _new_client(self, protocol: int) -> mqtt.Client:
        machine = self.settings.machine
        client = make_client(self.broker, client_id(machine, self.incarnation), protocol, persistent=True)
        client.will_set(self.topics.status(machine), offline_status(machine, self.incarnation), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
        client.max_inflight_messages_set(WINDOW)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._outage.on_connect_fail
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.suppress_exceptions = True  # a bug in a callback is logged; the network thread lives on
        client.enable_logger(PAHO_LOG)
        return client

    def start(self, outbox: EventSource, handler: LinkHandler) -> None:
        self._outbox, self._handler = outbox, handler
        self.client = self._new_client(mqtt.MQTTv5)
        self._connect()
        for thread in self._threads:
            thread.start()

    def _connect(self) -> None:
        keepalive = self.settings.keepalive
        if self.client.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=keepalive,
                                      clean_start=False, properties=props)
        else:
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=keepalive)
        self.client.loop_start()

    def _fall_back_to_v311(self) -> None:
        """The broker refused MQTT 5: reconnect with 3.1.1 (from our thread, not paho's)."""
        log.warning("broker %s does not speak MQTT 5; using MQTT 3.1.1", self.broker)
        self.client.loop_stop()
        self._inflight.clear()  # the old client's queue goes with it; the outbox still has them
        self.client = self._new_client(mqtt.MQTTv311)
        self._connect()

    def close(self) -> None:
        """Give the outbox up to `drain_s` to reach a connected broker (the shutdown's own
        `session_ended` and `agent_stopped`), then disconnect; what the logbook has not
        archived waits in the outbox for the next start."""
        if self.client is None:
            return
        deadline = time.monotonic() + self.settings.drain_s
        while (self.connected and self._outbox is not None and self._outbox.unacknowledged
               and time.monotonic() < deadline):
            self._wake.set()
            self._stop.wait(0.02)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5)
        if self.connected:
            # A clean stop: say so ourselves (the will is only for vanishing).
            machine = self.settings.machine
            info = self.client.publish(self.topics.status(machine), offline_status(machine, self.incarnation),
                                       qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self.connected = False
        disconnect(self.client)

    def wake(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    def publish_status(self, status: dict[str, Any]) -> None:
        if self.client is not None:
            self.client.publish(self.topics.status(self.settings.machine), json.dumps(status), qos=1, retain=True)

    # -- paho callbacks (network thread): hand over, never block ------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            if reason_code == "Unsupported protocol version" and client.protocol == mqtt.MQTTv5:
                self._downgrade.set()
                self._wake.set()
                return
            log.error("broker %s refused the connection: %s", self.broker, reason_code)
            return
        self.connected = True
        self._outage.ended()
        log.info("connected to %s", self.broker)
        machine = self.settings.machine
        subscriptions = [(self.topics.members, 1), (self.topics.commands(machine), 1),
                         (self.topics.archived(machine), 1), (self.topics.status(machine), 1)]
        if self.settings.simulated:
            subscriptions.append((self.topics.sim_tap(machine), 1))
        client.subscribe(subscriptions)
        self._send_again.set()  # what the mark does not cover, from the start
        self._handler.connected()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self.connected:
            log.warning("disconnected from %s (%s); events wait in the outbox", self.broker, reason_code)
        self.connected = False

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acks.put((mid, not reason_code.is_failure))
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic, payload, machine = message.topic, message.payload, self.settings.machine
        if topic == self.topics.members:
            try:
                self._lists.get_nowait()  # a newer list replaces one not yet started
            except queue.Empty:
                pass
            self._lists.put_nowait(payload)
        elif topic == self.topics.commands(machine):
            self._command(payload)
        elif topic == self.topics.archived(machine):
            seq, resend = own_mark(payload, machine, self.incarnation)
            if seq is not None:
                self._marks.put((seq, resend))
                self._wake.set()
        elif topic == self.topics.status(machine):
            self._status(payload, message.retain)
        elif topic == self.topics.sim_tap(machine) and self.settings.simulated:
            try:
                badge = normalise_badge(payload.decode("utf-8", "replace").strip())
            except BadBadge as err:
                log.warning("sim/tap ignored: %s", err)
                return
            self._handler.simulated_tap(badge)

    def _status(self, payload: bytes, retained: bool) -> None:
        """A status on this machine's topic: another incarnation's is another agent with this id.
        Only a live one counts (not retained: published while we listen); its offline, retained
        or not, ends it."""
        try:
            status = json.loads(payload)
        except ValueError:
            return
        other = status.get("incarnation") if isinstance(status, dict) else None
        if not isinstance(other, str) or other == self.incarnation:
            return
        if status.get("state") == "offline":
            self._handler.twin_gone(other)
        elif not retained:
            self._handler.twin_alive(other)

    def _command(self, payload: bytes) -> None:
        try:
            command = commands.parse(payload, self.settings.machine, self._public_key)
        except commands.CommandError as err:
            self._handler.command_refused(str(err))
            return
        self._handler.command_arrived(command)

    # -- our threads ---------------------------------------------------------------------

    def _list_worker(self) -> None:
        while not self._stop.is_set():
            try:
                payload = self._lists.get(timeout=0.5)
            except queue.Empty:
                continue
            if not payload:
                continue  # a cleared retained list
            try:
                self._handler.list_arrived(payload)
            except Exception:  # the sync must outlive any one list (a full disk, say)
                log.exception("member list not applied")

    def _publisher(self) -> None:
        outbox = self._outbox
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._downgrade.is_set():
                self._downgrade.clear()
                self._fall_back_to_v311()
            self._settle_acks(outbox)
            self._take_marks(outbox)
            if not self.connected:
                continue
            self._maybe_send_again(outbox, time.monotonic())
            while len(self._inflight) < WINDOW and not self._stop.is_set():
                self._sent_up_to = max(self._sent_up_to, outbox.mark or 0)  # what is archived stays home
                batch = outbox.pending(self._sent_up_to, min(BATCH, WINDOW - len(self._inflight)))
                if not batch:
                    break
                for seq, payload in batch:
                    info = self.client.publish(self.topics.events(self.settings.machine), payload, qos=1)
                    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                        log.error("cannot publish event %d: %s", seq, mqtt.error_string(info.rc))
                        break
                    self._inflight[info.mid] = seq
                    self._sent_up_to = seq
                self._settle_acks(outbox)

    def _settle_acks(self, outbox: EventSource) -> None:
        while True:
            try:
                mid, ok = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue  # a status message
            if ok:
                self._acked_up_to = max(self._acked_up_to, seq)
            else:
                log.error("broker refused event %d (not authorised?); it stays in the outbox", seq)
        # Events are sent in seq order: all sent before the oldest still in flight were taken.
        oldest = min(self._inflight.values(), default=None)
        outbox.acknowledged(self._acked_up_to if oldest is None else min(oldest - 1, self._acked_up_to))

    def _take_marks(self, outbox: EventSource) -> None:
        """The logbook's marks for this incarnation, oldest first: forget what they cover."""
        while True:
            try:
                seq, resend = self._marks.get_nowait()
            except queue.Empty:
                return
            if outbox.archived(seq):
                self._behind_since, self._resend_wait = None, self.settings.resend_after
            if resend:
                log.info("the logbook asks for every event after seq %d", seq)
                self._send_again.set()

    def _maybe_send_again(self, outbox: EventSource, now: float) -> None:
        """Start again from the mark: at a connection, when the logbook asks, or when the mark has
        stayed behind what was sent for resend_after (doubling, up to RESEND_MAX_S, while it stays)."""
        mark = outbox.mark
        if mark is not None and self._sent_up_to > mark:
            if self._behind_since is None:
                self._behind_since = now
            elif now - self._behind_since >= self._resend_wait:
                log.warning("the logbook has not confirmed events %d to %d for %.0f s; sending them again",
                            mark + 1, self._sent_up_to, now - self._behind_since)
                self._send_again.set()
                self._behind_since = now
                self._resend_wait = min(2 * self._resend_wait, RESEND_MAX_S)
        else:
            self._behind_since = None
        if self._send_again.is_set():
            self._send_again.clear()
            self._sent_up_to = mark or 0
