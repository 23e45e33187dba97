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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpiozero import Factory

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
from agent.daemon.clock import SystemClock
from agent.daemon.clock import now as system_now
from agent.daemon.control import ControlError, ControlServer
from agent.daemon.listsync import ListOutcome, list_age
from agent.daemon.lock import StorageLock
from agent.daemon.nonces import Nonces
from agent.daemon.outbox import StorageError
from agent.daemon.storage import GRANTS_KEY, Storage
from agent.daemon.systemd import Notifier
from agent.hardware.factory import make_reader, pin_factory
from agent.hardware.inputs import NAMES as INPUT_NAMES
from agent.hardware.inputs import MachineInputs
from agent.hardware.outputs import Indicators, MachineRelay
from agent.hardware.reader import Reader
from agent.members.update import Updated, update_cache_in_child

if TYPE_CHECKING:
    from agent.hardware.securecard import CardCheck
    from agent.link.agentlink import AgentLink
    from agent.link.commands import Command

log = logging.getLogger("fabpass.agent")

MAX_IDLE_WAIT = 1.0  # the loop wakes at least this often (heartbeat, watchdog)
CLOCK_CHECK_S = 10.0  # how often the loop looks whether the clock's state changed
# An open session notes that the agent is alive at least this often (plus one loop turn: under
# 60 s), so that a power cut ends it there, not at the restart. One small SD write each.
HEARTBEAT_S = 55.0
PRUNE_EVERY_S = 3600.0  # events older than [storage] keep are looked for this often


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
                                  config.members.public_key, config.simulate, drain_s, mc.resend_after))


class _FromLink:
    """What the link hands over, put on the agent's loop; a list is taken on the link's thread."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def connected(self) -> None:
        self.agent.submit(self.agent.status_changed)

    def list_arrived(self, payload: bytes) -> None:
        self.agent.receive_list(payload)

    def command_arrived(self, command: Command) -> None:
        self.agent.submit(self.agent.command, command)

    def command_refused(self, error: str) -> None:
        self.agent.submit(self.agent.reject_command, error)

    def simulated_tap(self, badge: str) -> None:
        self.agent.submit(self.agent.tap, badge)

    def twin_alive(self, incarnation: str) -> None:
        self.agent.submit(self.agent.twin_alive, incarnation)

    def twin_gone(self, incarnation: str) -> None:
        self.agent.submit(self.agent.twin_gone, incarnation)


class Agent:
    """The machine agent of `config`. `link` (see link_for) connects it to a broker."""

    def __init__(self, config: Config, pins: Factory | None = None, reader: Reader | None = None,
                 clock: Callable[[], Instant] = system_now, link: AgentLink | None = None,
                 clock_status: SystemClock | None = None) -> None:
        self.config = config
        self.id = config.machine.id
        # Before anything else: a second agent on this storage touches nothing (StorageInUse).
        self.lock = StorageLock(config.storage.dir)
        self.clock = clock
        self.simulated = config.simulate
        self.pins = pins if pins is not None else pin_factory(self.simulated)
        # The relay first: off from the first instant.
        self.relay = MachineRelay(config.relay, self.pins)
        self.indicators = Indicators(config.indicators, self.pins)
        self.storage = Storage(config)
        self.machine = self.storage.machine
        self.outbox, self.cache = self.storage.outbox, self.storage.cache
        self.nonces = Nonces(self.outbox)
        # secure cards: a bad key file stops the agent at start (CardKeyError), not at the first tap
        secure = config.reader.secure is not None and not self.simulated
        if secure:
            from agent.hardware.securecard import check_key_file

            check_key_file(config.reader)
        self.reader = reader or make_reader(config.reader, self.simulated, self.pins)
        if secure and not self.reader.authenticates:
            log.error("reader.secure: this %s reader does not authenticate cards: every card is refused "
                      "card_not_authentic except badges listed uid:", self.reader.name)
        self.clock_status = clock_status or SystemClock()
        self.require_sync = config.require_sync  # read once: the environment may say "simulate"
        self._clock_seen: tuple[bool, bool] | None = None  # (synchronised, trusted) as last published
        self._clock_checked = float("-inf")
        self.inputs: MachineInputs | None = None
        self._last_tap: session.LastTap | None = None  # who an out-of-order report names
        self._held_file: tuple[int, int] | None = None  # the member cache file _hold_grants last read
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
        self._alive_at = float("-inf")  # monotonic: the last heartbeat written
        self._pruned_at = float("-inf")
        self._twins: set[str] = set()  # incarnations of other live agents with this machine id

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
        self.inputs = MachineInputs(self.config, self.pins, lambda name, active: self.submit(self._sensed, name, active))
        pressed, bypass = self.inputs.active("report"), bool(self.outbox.get("bypass", False))
        self.state = session.State(
            locked=bool(self.outbox.get("locked", False)), running=self.inputs.active("sensor"), since=now.wall,
            at_machine=session.AtMachine(
                grants=self.storage.grants(),
                report=session.Press(pressed, pressed),  # a press held across a start is not a new report
                bypass=session.Debounced(bypass, bypass)))  # as last reported; a change while stopped settles below
        self._sensed("bypass", self.inputs.active("bypass"))
        self._hold_grants()
        self.reader.start(lambda badge, check=None: self.submit(self.tap, badge, check), self._reader_health)
        self.control = ControlServer(self.config.storage.dir, self._control)
        self.control.start()
        if self.link is not None:
            self.link.start(self.outbox, _FromLink(self))
        info = self.cache.info()
        log.info("started: %s (%s), reader %s, relay pin %d (%s), members version %s (%d), %s, %s",
                 self.config.machine.name or self.id, "simulated" if self.simulated else "hardware",
                 self.config.reader.type, self.config.relay.pin,
                 "active-high" if self.config.relay.active_high else "active-low",
                 info.version, info.count, f"broker {self.link.broker}" if self.link else "no broker",
                 self._clock_words())
        self._clock_seen = self._clock_now()
        self.status_changed()

    def _recover(self, now: Instant) -> None:
        """A session left open by a crash or power cut is closed at its last heartbeat: the
        last moment the agent was known alive (not the restart, maybe days later)."""
        open_session = self.outbox.get("session")
        if not open_session:
            return
        if "alive" in open_session:
            end, duration = parse_rfc3339(open_session["alive"]), open_session["duration_s"]
        else:  # noted by an agent without heartbeats: the restart is all there is
            end = now.wall
            duration = round(max(0.0, (now.wall - parse_rfc3339(open_session["started"])).total_seconds()), 3)
        log.warning("closing the session of %s left open by an unclean stop, at its last heartbeat %s "
                    "(%.0f s; the end is estimated)", open_session["member_id"], rfc3339(end), duration)
        self._commit([(EventType.SESSION_ENDED, {
            "member_id": open_session["member_id"], "duration_s": duration,
            "reason": EndReason.AGENT_RESTART.value, "end_estimated": True,
        })], Instant(end, now.mono), {"session": None})

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
            self._watch_clock()
            self._heartbeat()
            self._keep_bounded()
            self._alive()

    def _heartbeat(self) -> None:
        """While a session is open, note at least every HEARTBEAT_S that the agent is alive
        (every step's commit notes it too)."""
        now = self.clock()
        if self.state.session is None or now.mono - self._alive_at < HEARTBEAT_S:
            return
        try:
            self._commit([], now, self._persisted(self.state, now))
        except StorageError as err:
            self._alive_at = now.mono  # tried: again in HEARTBEAT_S, not at every turn
            log.error("cannot note the session's heartbeat: %s", err)

    def _keep_bounded(self) -> None:
        """Delete what the logbook's mark covers (after a quiet while) and, every hour, what
        is older than [storage] keep."""
        now = self.clock()
        self.outbox.tidy(now.mono)
        if now.mono - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now.mono
            if self.outbox.prune(now.wall - dt.timedelta(seconds=self.config.storage.keep)):
                self.status_changed()

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
            for part in (self.reader, self.control, self.link, self.inputs, self.indicators):
                if part is not None:
                    try:
                        part.close()
                    except Exception:
                        log.exception("error while closing %s", part)
            self.outbox.tidy(self.clock().mono, force=True)
            self.storage.close()
            self.lock.release()
            log.info("stopped; relay off")

    # -- the machine ------------------------------------------------------------

    def tap(self, uid: str, check: CardCheck | None = None) -> dict[str, Any]:
        """A badge presented to the reader; `check`, from a reader that authenticates cards."""
        now = self.clock()
        for _ in range(3):
            tap = self.storage.tap(uid, now.wall, self.clock_trusted(), self.state.grants, self._authentic(check))
            if self.storage.cache.opened == self._held_file:
                break
            # A list taken off the loop since: held against the state (its trainer, its
            # grants) before the tap is judged by it, as the loop would have next.
            self._hold_grants()
        outcome = self.handle(tap)
        assert outcome is not None
        # for an out-of-order report: nobody known when the card did not authenticate
        self._last_tap = session.LastTap(tap.member.id if tap.member and tap.authentic else None, now.mono)
        shown = f"{tap.badge[:12]}…" if self.storage.hasher else tap.badge
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
            self._commit(records, now, self._persisted(step.state, now))
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
        relabel = _shown(step.state) != _shown(self.state)
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

    def _persisted(self, state: session.State, now: Instant) -> dict[str, Any]:
        """What must survive a crash: the lock, the open session so a restart can close it,
        with `now` as its heartbeat (`alive`, and the session's duration then), what the
        machine granted by itself, and the bypass key as last reported."""
        s = state.session
        return {"locked": state.locked,
                "session": {"member_id": s.member_id, "badge": s.badge, "started": rfc3339(s.started),
                            "alive": rfc3339(now.wall), "duration_s": round(max(0.0, now.mono - s.started_mono), 3)}
                if s else None,
                # at the machine
                GRANTS_KEY: state.grants.to_json() if state.grants else None,
                "bypass": state.bypass.on}

    def _retry_unwritten(self) -> None:
        """Events kept in memory by a full or failing disk go to disk as soon as it takes them."""
        if self._unwritten:
            now = self.clock()
            try:
                self._commit([], now, self._persisted(self.state, now))
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
        if changed.get("session"):
            self._alive_at = now.mono
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
            self.submit(self._hold_grants)
            self.submit(self.status_changed)
        return outcome.as_dict()

    def _hold_grants(self) -> None:
        """Hold what the machine granted against the list now in force (a list generated
        after a grant decides in its place), and the open session's trainer against what
        it says of them now."""
        session = self.state.session
        trainer = session.member_id if session is not None and session.trainer is not None else None
        in_force = self.storage.list_in_force(self.clock().wall, trainer)
        self._held_file = self.storage.cache.opened
        if in_force is not None:
            self.handle(in_force)

    # -- remote commands -----------------------------------------------------------

    def command(self, command: Command) -> None:
        """A technician's command (lock, unlock, end_session, enrol), parsed by the link, on the loop:
        obeyed only if it is young enough, its nonce new (signed) and it names the session
        in progress (end_session, lock now)."""
        from agent.link.commands import CommandError, admit, aimed

        now = self.clock()
        try:
            admit(command, now.wall, self.config.commands.max_age)
            started = self.state.session.started if self.state.session else None
            aimed(command, started)
            if command.nonce is not None and command.ts is not None:
                self.nonces.remember(command.nonce, command.ts + dt.timedelta(seconds=self.config.commands.max_age),
                                     now.wall)
        except CommandError as err:
            self.reject_command(str(err))
            return
        by, reason = command.by, command.reason
        event = {
            "lock": lambda: session.Lock(by, reason, command.now),
            "unlock": lambda: session.Unlock(by, reason),
            "end_session": lambda: session.EndSession(by, reason),
            "enrol": lambda: session.Enrol(command.member_id, by, self.storage.member(command.member_id) is not None),
        }[command.kind]()
        log.info("command %s by %s: %s", command.kind, by,
                 command.member_id if command.kind == "enrol" else reason or "-")
        self.handle(event)

    # -- inputs at the machine -----------------------------------------------------------

    def _sensed(self, name: str, active: bool) -> None:
        """An input changed level (gpiozero's thread submits it to the loop)."""
        if name == "report":
            self.handle(session.ReportButton(active, self._last_tap))
        else:
            self.handle({"sensor": session.Running, "bypass": session.BypassKey}[name](active))

    def reject_command(self, error: str) -> None:
        log.warning("command rejected: %s", error)
        self._commit([(EventType.COMMAND_REJECTED, {"error": error})], self.clock())

    # -- the clock (issue 17) -------------------------------------------------------------

    def clock_trusted(self) -> bool:
        """May date rules trust the wall clock: it is synchronised, or the config says to trust it."""
        return not self.require_sync or self.clock_status.synchronised()

    def _clock_now(self) -> tuple[bool, bool]:
        synchronised = self.clock_status.synchronised()
        return synchronised, synchronised or not self.require_sync

    def _clock_words(self) -> str:
        """The clock's state and what it means for taps, for the journal."""
        synchronised, trusted = self._clock_now()
        if synchronised:
            return "clock synchronised"
        if trusted:
            why = "simulation" if self.config.clock.require_sync is None else "[clock] require_sync = false"
            return f"clock NOT synchronised but trusted ({why})"
        return ("clock NOT synchronised: members with expiry dates, machines with opening hours and "
                "max_list_age refuse (clock_unsynchronised, stale_member_list) until it is")

    def _watch_clock(self) -> None:
        """Publish the status when the clock's state changes (NTP reached at last, say)."""
        mono = self.clock().mono
        if mono - self._clock_checked < CLOCK_CHECK_S:
            return
        self._clock_checked = mono
        seen = self._clock_now()
        if seen != self._clock_seen:
            self._clock_seen = seen
            log.info("%s", self._clock_words())
            self.status_changed()
    # -- the archive ----------------------------------------------------------------------------

    def twin_alive(self, incarnation: str) -> None:
        """Another live agent uses this machine id (a copied config): say so, once per agent."""
        if incarnation in self._twins:
            return
        self._twins.add(incarnation)
        log.error("another agent is running with machine id %s (incarnation %s; this one is %s): give each "
                  "machine its own id. The logbook keeps both agents' events.", self.id, incarnation,
                  self.outbox.incarnation or "(none)")
        self._commit([(EventType.MACHINE_ID_CONFLICT, {"other_incarnation": incarnation})], self.clock())
        self.status_changed()  # the other agent sees this one live too

    def twin_gone(self, incarnation: str) -> None:
        if incarnation in self._twins:
            self._twins.discard(incarnation)
            log.warning("the other agent with machine id %s (incarnation %s) is offline", self.id, incarnation)
            self.status_changed()

    # -- status and control --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.state
        info = self.cache.info()
        age = list_age(info.generated_at, self.clock().wall)
        synchronised, trusted = self._clock_now()
        return {
            "v": 1, "machine": self.id, "state": state.label, "locked": state.locked,
            "relay": self.relay.on,
            "member_id": state.session.member_id if state.session else None,
            "since": rfc3339(state.since) if state.since else None,
            "members_version": info.version,
            "members_age_s": round(age, 1) if age is not None else None,
            "outbox": self.outbox.unacknowledged, "last_seq": self.outbox.last_seq,
            "broker": bool(self.link and self.link.connected),
            "agent_version": __version__,
            # the archive
            "incarnation": self.outbox.incarnation, "unarchived": self.outbox.unarchived,
            "kept_from": self.outbox.kept_from, "conflict": bool(self._twins),
            "name": self.config.machine.name, "members_count": info.count,
            "previous_member_id": state.previous_member,
            "reader": {"type": self.config.reader.type if not self.simulated else "simulated",
                       "healthy": self.reader.healthy, "detail": self.reader.detail,
                       "counters": self.reader.counters},
            "simulated": self.simulated,
            # trust (issue 17)
            "clock_synchronised": synchronised,
            "clock_trusted": trusted,
            # at the machine
            "member_name": state.session.name or None if state.session else None,  # null for no name
            "induction": self.config.machine.induction,
            "bypass": state.bypass.on,
            "enrolling": state.enrolment.member_id if state.enrolment else None,
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
                return self.call(lambda: self.storage.check(badge, self.state, self.clock(), self.clock_trusted()))
            if not self.simulated:
                raise ControlError("this agent runs real hardware: taps come from its reader "
                                   "(start it with --simulate to tap from the command line)", usage=True)
            return self.call(self.tap, badge)
        if op == "input":
            return self._simulate_input(request.get("name"), request.get("on"))
        if op == "import":
            path, version = Path(str(request.get("path"))), request.get("version")
            return self._take_list(lambda now: self.storage.import_file(path, version, now))
        raise ControlError(f"unknown request {op!r}", usage=True)

    def _simulate_input(self, name: Any, on: Any) -> dict[str, Any]:
        """`fabpass input NAME on|off`: drive a simulated input's pin as its part would."""
        if name not in INPUT_NAMES or not isinstance(on, bool):
            raise ControlError(f"an input is one of {', '.join(INPUT_NAMES)}, set on or off", usage=True)
        if not self.simulated:
            raise ControlError("this agent runs real hardware: its inputs are wired "
                               "(start it with --simulate to set them from the command line)", usage=True)
        if name not in self.inputs.devices:
            raise ControlError(f"no {name} input: {self.config.path or 'the config'} has no [{name}] pin", usage=True)
        self.inputs.simulate(name, on)
        self.call(lambda: None)  # the loop has taken the change
        return {"input": name, "on": on}


def _shown(state: session.State) -> tuple:
    """What of the state the status shows, so that a change of it is published."""
    return state.label, state.locked, state.bypass.on, state.enrolment
