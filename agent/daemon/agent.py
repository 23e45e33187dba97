"""The machine agent: the one place that wires reader, relay, cache, outbox and MQTT.

Everything that changes the machine happens on one thread, the loop: taps
from the reader, commands and lists from MQTT and requests from the control
socket are submitted to it as calls. The loop asks the pure session machine
what to do and carries out its actions: relay off at once, events written
durably, relay on only once the event explaining it is on disk.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from gpiozero import DigitalInputDevice, Factory

from agent import __version__
from agent.config import Config
from agent.core import session
from agent.core.model import (
    BadBadge,
    EndReason,
    EventType,
    Instant,
    Reason,
    Signal,
    normalise_badge,
)
from agent.core.session import Indicate, Outcome, Record, Relay, Step, Tap
from agent.core.timespec import parse_rfc3339, rfc3339
from agent.daemon.clock import SimulatedClock, SystemClock
from agent.daemon.clock import now as system_now
from agent.daemon.control import ControlError, ControlServer
from agent.daemon.listsync import ListOutcome
from agent.daemon.outbox import StorageError
from agent.daemon.storage import Storage
from agent.daemon.systemd import Notifier
from agent.hardware.factory import make_reader, pin_factory
from agent.hardware.outputs import Indicators, MachineRelay
from agent.hardware.reader import Reader
from agent.members.update import Updated, update_cache_in_child

if TYPE_CHECKING:
    from agent.hardware.securecard import CardCheck
    from agent.link.agentlink import AgentLink
    from agent.link.commands import Command

log = logging.getLogger("fabpass.agent")

MAX_IDLE_WAIT = 1.0  # the loop wakes at least this often (heartbeat, watchdog)


def link_for(config: Config, drain_s: float = 5.0) -> AgentLink | None:
    """The MQTT link the config asks for, or None without [mqtt]."""
    mc = config.mqtt
    if mc is None:
        return None
    from agent.link.agentlink import AgentLink, LinkSettings
    from agent.link.broker import Broker

    broker = Broker.parse(mc.url).with_credentials(mc.username, mc.password_file, mc.ca_file, mc.cert_file,
                                                   mc.key_file)
    return AgentLink(LinkSettings(broker, config.machine.id, mc.topic_prefix, mc.keepalive,
                                  config.members.public_key, config.simulate, drain_s))


class _FromLink:
    """What the link hands over, put on the agent's loop; a list is taken on the link's thread."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def connected(self) -> None:
        self.agent.submit(self.agent.status_changed)

    def list_arrived(self, payload: bytes) -> None:
        self.agent.receive_list(payload)

    def command_arrived(self, command: Command) -> None:
        self.agent.submit(self.agent.command, command.kind, command.by, command.reason, command.now)

    def command_refused(self, error: str) -> None:
        self.agent.submit(self.agent.reject_command, error)

    def simulated_tap(self, badge: str) -> None:
        self.agent.submit(self.agent.tap, badge)


class Agent:
    """The machine agent of `config`. `link` (see link_for) connects it to a broker."""

    def __init__(self, config: Config, pins: Factory | None = None, reader: Reader | None = None,
                 clock: Callable[[], Instant] = system_now, link: AgentLink | None = None,
                 clock_status: SystemClock | SimulatedClock | None = None) -> None:
        self.config = config
        self.id = config.machine.id
        self.clock = clock
        self.simulated = config.simulate
        self.pins = pins if pins is not None else pin_factory(self.simulated)
        # The relay first: off from the first instant.
        self.relay = MachineRelay(config.relay, self.pins)
        self.indicators = Indicators(config.indicators, self.pins)
        self.storage = Storage(config)
        self.machine = self.storage.machine
        self.outbox, self.cache = self.storage.outbox, self.storage.cache
        # secure cards: a bad key file stops the agent at start (CardKeyError), not at the first tap
        secure = config.reader.secure is not None and not self.simulated
        if secure:
            from agent.hardware.securecard import check_key_file

            check_key_file(config.reader)
        self.reader = reader or make_reader(config.reader, self.simulated, self.pins)
        if secure and not self.reader.authenticates:
            log.error("reader.secure: this %s reader does not authenticate cards: every card is refused "
                      "card_not_authentic except badges listed uid:", self.reader.name)
        self.clock_status = clock_status or (SimulatedClock() if self.simulated else SystemClock())
        self.sensor: DigitalInputDevice | None = None
        self.state = session.State()
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple, Future]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._unwritten: list[tuple[str, dict[str, Any]]] = []
        self._saved: dict[str, Any] = {}  # the meta keys as last written by this agent
        self._members_lock = threading.Lock()
        self.link = link
        self.control: ControlServer | None = None
        self.started = threading.Event()
        self.notifier = Notifier.from_env()
        self._last_ping = float("-inf")

    # -- calls onto the loop ------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._calls.put((fn, args, future))
        return future

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 15.0) -> Any:
        return self.submit(fn, *args).result(timeout)

    # -- life cycle -----------------------------------------------------------

    def run(self) -> int:
        """Run until stop() or SIGTERM/SIGINT; the relay is off on every way out."""
        try:
            self._start()
            self.started.set()
            self.notifier.ready()
            self._loop()
        finally:
            self.notifier.stopping()
            self._shutdown()
            self.notifier.close()
        return 0

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())

    def stop(self) -> None:
        self._stop.set()
        self._calls.put((lambda: None, (), Future()))

    def _start(self) -> None:
        now = self.clock()
        self._recover(now)
        self._commit([(EventType.AGENT_STARTED, {"agent_version": __version__})], now)
        running = False
        if self.config.sensor.pin is not None:
            self.sensor = DigitalInputDevice(self.config.sensor.pin, pull_up=None,
                                             active_state=self.config.sensor.active_high, pin_factory=self.pins)
            self.sensor.when_activated = lambda: self.submit(self.handle, session.Running(True))
            self.sensor.when_deactivated = lambda: self.submit(self.handle, session.Running(False))
            running = bool(self.sensor.value)
        self.state = session.State(locked=bool(self.outbox.get("locked", False)), running=running, since=now.wall)
        self.reader.start(lambda badge, check=None: self.submit(self.tap, badge, check), self._reader_health)
        self.control = ControlServer(self.config.storage.dir, self._control)
        self.control.start()
        if self.link is not None:
            self.link.start(self.outbox, _FromLink(self))
        info = self.cache.info()
        log.info("started: %s (%s), reader %s, relay pin %d (%s), members version %s (%d), %s",
                 self.config.machine.name or self.id, "simulated" if self.simulated else "hardware",
                 self.config.reader.type, self.config.relay.pin,
                 "active-high" if self.config.relay.active_high else "active-low",
                 info.version, info.count, f"broker {self.link.broker}" if self.link else "no broker")
        self.status_changed()

    def _recover(self, now: Instant) -> None:
        """A session left open by a crash or power cut is closed as ended at restart."""
        open_session = self.outbox.get("session")
        if not open_session:
            return
        started = parse_rfc3339(open_session["started"])
        duration = round(max(0.0, (now.wall - started).total_seconds()), 3)
        log.warning("closing session of %s left open by an unclean stop (%.0f s, end estimated)",
                    open_session["member_id"], duration)
        self._commit([(EventType.SESSION_ENDED, {
            "member_id": open_session["member_id"], "duration_s": duration,
            "reason": EndReason.AGENT_RESTART.value, "end_estimated": True,
        })], now, {"session": None})

    def _loop(self) -> None:
        while not self._stop.is_set():
            wake = session.next_wakeup(self.state, self.machine)
            wait = MAX_IDLE_WAIT if wake is None else min(MAX_IDLE_WAIT, max(0.0, wake - self.clock().mono))
            try:
                fn, args, future = self._calls.get(timeout=wait)
            except queue.Empty:
                pass
            else:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except Exception as err:  # a failed call answers its caller, the loop goes on
                        if not isinstance(err, ControlError):
                            log.exception("error while handling %s", getattr(fn, "__name__", fn))
                        future.set_exception(err)
            self.handle(session.Tick())
            self._retry_unwritten()
            self._alive()

    def _alive(self) -> None:
        """Tell the watchdogs the loop is alive, but only while the reader answers too:
        the dead-man pin toggles each turn (at least once a second), systemd is pinged
        every half WatchdogSec."""
        if not self.reader.healthy:
            return
        self.indicators.beat()
        interval = self.notifier.watchdog_interval
        mono = self.clock().mono
        if interval is not None and mono - self._last_ping >= interval:
            self.notifier.watchdog()
            self._last_ping = mono

    def _shutdown(self) -> None:
        self.relay.switch(False)
        try:
            self.handle(session.Shutdown())
            self._commit([(EventType.AGENT_STOPPED, {"agent_version": __version__})], self.clock())
        except Exception:
            log.exception("error while recording the shutdown")
        finally:
            self.relay.close()
            for part in (self.reader, self.control, self.link, self.sensor, self.indicators):
                if part is not None:
                    try:
                        part.close()
                    except Exception:
                        log.exception("error while closing %s", part)
            self.storage.close()
            log.info("stopped; relay off")

    # -- the machine ------------------------------------------------------------

    def tap(self, uid: str, check: CardCheck | None = None) -> dict[str, Any]:
        """A badge presented to the reader; `check`, from a reader that authenticates cards."""
        badge = self.storage.badge_key(uid)
        tap = self.storage.tap(badge, self.clock().wall, self.clock_status.synchronised(), self._authentic(check))
        outcome = self.handle(tap)
        assert outcome is not None
        shown = f"{badge[:12]}…" if self.storage.hasher else badge
        member = tap.member.id if tap.member else "unknown"
        if outcome.reason == Reason.CARD_NOT_AUTHENTIC:
            log.warning("tap %s (%s): refused, card_not_authentic: %s", shown, member,
                        check.why if check else "the reader does not authenticate cards")
        elif outcome.action == "refused":
            log.info("tap %s (%s): refused, %s", shown, member, outcome.reason)
        else:
            log.info("tap %s (%s): %s, relay %s%s", shown, outcome.member_id, outcome.action,
                     "on" if outcome.relay else "off", " (uid: badge, not authenticated)" if tap.by_uid else "")
        return outcome.as_dict()

    def _authentic(self, check: CardCheck | None) -> bool:
        """Secure cards: whether the card proved itself. A reader that does not authenticate
        proves nothing (fail closed); in simulation the cards are genuine."""
        if self.config.reader.secure is None:
            return True
        return check.authentic if check is not None else self.simulated

    def handle(self, event: session.Input) -> Outcome | None:
        now = self.clock()
        step = session.handle(self.state, event, now, self.machine)
        return self._carry_out(step, event, now)

    def _carry_out(self, step: Step, event: session.Input, now: Instant) -> Outcome | None:
        if step.state is self.state and not step.actions:
            return step.outcome
        for action in step.actions:
            if isinstance(action, Relay) and not action.on:
                self.relay.switch(False)  # never waits for I/O
        records = [(a.type, a.fields) for a in step.actions if isinstance(a, Record)]
        try:
            self._commit(records, now, self._persisted(step.state))
        except StorageError as err:
            if isinstance(event, Tap) and step.outcome is not None and step.outcome.action == "started":
                # Fail closed: no session starts without its event on disk.
                member_id = event.member.id if event.member else None
                log.error("refusing %s (%s): %s", event.badge, member_id, err)
                fields = {"badge": event.badge, "member_id": member_id, "reason": Reason.STORAGE_ERROR.value}
                self._unwritten.append((EventType.ACCESS_DENIED, fields))
                self._show(Signal.REFUSED)
                return Outcome("refused", Reason.STORAGE_ERROR.value, self.relay.on, member_id)
            self._unwritten.extend(records)
            log.error("events kept in memory until the disk accepts them again: %s", err)
        relabel = step.state.label != self.state.label or step.state.locked != self.state.locked
        self.state = step.state
        for action in step.actions:
            if isinstance(action, Relay) and action.on:
                self.relay.switch(True)
            elif isinstance(action, Indicate):
                self._show(action.signal)
        if relabel:
            self.status_changed()
        return step.outcome

    def _show(self, sig: Signal) -> None:
        self.indicators.show(sig)
        self.reader.indicate(sig)

    def _persisted(self, state: session.State) -> dict[str, Any]:
        """What must survive a crash: the lock, and the open session so a restart can close it."""
        s = state.session
        return {"locked": state.locked,
                "session": {"member_id": s.member_id, "badge": s.badge, "started": rfc3339(s.started)} if s else None}

    def _retry_unwritten(self) -> None:
        """Events kept in memory by a full or failing disk go to disk as soon as it takes them."""
        if self._unwritten:
            try:
                self._commit([], self.clock(), self._persisted(self.state))
            except StorageError:
                pass
            else:
                log.info("the disk accepts events again: the events kept in memory are written")

    def _commit(self, records: list[tuple[str, dict[str, Any]]], now: Instant,
                meta: dict[str, Any] | None = None) -> None:
        """Write the backlog, `records` and the `meta` keys that changed, in one transaction."""
        backlog = self._unwritten + records
        changed = {k: v for k, v in (meta or {}).items() if k not in self._saved or self._saved[k] != v}
        if not backlog and not changed:
            return
        events = self.outbox.commit(backlog, now.wall, changed)
        self._saved.update(changed)
        self._unwritten = []
        if events and self.link is not None:
            self.link.wake()

    # -- members -------------------------------------------------------------------

    def members_age(self) -> float | None:
        return self.storage.list_age(self.clock().wall)

    def import_members(self, load: Callable[[], Any]) -> dict[str, Any]:
        """Take a list parsed by `load` (a file being imported), in this process."""
        return self._take_list(lambda now: self.storage.import_list(load, now))

    def receive_list(self, payload: bytes) -> dict[str, Any]:
        """Take a list from the broker, written by a child process so that taps never wait for it."""
        members = self.config.members

        def in_child(data: bytes) -> Updated:
            return update_cache_in_child(self.config.storage.dir, data, members.public_key,
                                         members.badge_hash_key_file)

        # What else decides the cache's content: a new key must re-read even the same list.
        hasher = self.storage.hasher
        settings = f"{members.public_key or ''} {hasher('00000000') if hasher else ''}"
        return self._take_list(lambda now: self.storage.lists.take_published(payload, in_child, now, settings))

    def _take_list(self, take: Callable[[dt.datetime], ListOutcome]) -> dict[str, Any]:
        with self._members_lock:
            outcome = take(self.clock().wall)
        if self.link is not None:
            self.link.wake()
        if outcome.applied:
            self.submit(self.status_changed)
        return outcome.as_dict()

    # -- remote commands -----------------------------------------------------------

    def command(self, kind: str, by: str, reason: str, now_flag: bool = False) -> None:
        """A validated technician's command (lock, unlock, end_session), on the loop."""
        event = {
            "lock": lambda: session.Lock(by, reason, now_flag),
            "unlock": lambda: session.Unlock(by, reason),
            "end_session": lambda: session.EndSession(by, reason),
        }[kind]()
        log.info("command %s by %s: %s", kind, by, reason or "-")
        self.handle(event)

    def reject_command(self, error: str) -> None:
        log.warning("command rejected: %s", error)
        self._commit([(EventType.COMMAND_REJECTED, {"error": error})], self.clock())

    # -- status and control --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.state
        info = self.cache.info()
        age = self.members_age()
        return {
            "v": 1, "machine": self.id, "state": state.label, "locked": state.locked,
            "relay": self.relay.on,
            "member_id": state.session.member_id if state.session else None,
            "since": rfc3339(state.since) if state.since else None,
            "members_version": info.version,
            "members_age_s": round(age, 1) if age is not None else None,
            "outbox": self.outbox.depth, "last_seq": self.outbox.last_seq,
            "broker": bool(self.link and self.link.connected),
            "agent_version": __version__,
            "name": self.config.machine.name, "members_count": info.count,
            "previous_member_id": state.previous_member,
            "reader": {"type": self.config.reader.type if not self.simulated else "simulated",
                       "healthy": self.reader.healthy, "detail": self.reader.detail,
                       "counters": self.reader.counters},
            "simulated": self.simulated,
        }

    def status_changed(self) -> None:
        if self.link is not None:
            self.link.publish_status(self.status())

    def _reader_health(self, ok: bool, detail: str | None) -> None:
        if ok:
            log.info("reader answering again")
        else:
            log.error("reader not answering: %s", detail)
        self.submit(self._show, Signal.IDLE if ok else Signal.OFFLINE)
        self.submit(self.status_changed)

    def _control(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "status":
            return self.call(self.status)
        if op in ("tap", "check"):
            try:
                badge = normalise_badge(request.get("badge", ""))
            except BadBadge as err:
                raise ControlError(str(err), usage=True) from None
            if op == "check":
                badge = self.storage.badge_key(badge)
                return self.call(lambda: self.storage.check(badge, self.state, self.clock(),
                                                            self.clock_status.synchronised()))
            if not self.simulated:
                raise ControlError("this agent runs real hardware: taps come from its reader "
                                   "(start it with --simulate to tap from the command line)", usage=True)
            return self.call(self.tap, badge)
        if op == "import":
            from agent.members.snapshot import load_file

            path, version = request.get("path"), request.get("version")
            return self.import_members(lambda: load_file(path, version=version,
                                                        public_key=self.config.members.public_key))
        raise ControlError(f"unknown request {op!r}", usage=True)
