"""Running real agents in tests: in-process on mock pins, or as `fabpass run` subprocesses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from agent.config import HardwareConfig, parse
from agent.core.model import Instant
from agent.daemon.agent import Agent, link_for
from agent.daemon.control import NotRunning, request
from agent.devtools.machines import machine_toml
from tests.support.helpers import wait_for

MEMBERS = {
    "v": 1, "version": 1, "generated_at": "2026-11-25T08:00:00Z",
    "members": [
        {"id": "ada", "name": "Ada", "badges": ["04A1B2C3D4E5F6"], "status": "active",
         "expires": None, "roles": [], "inductions": {"laser": None}},
        {"id": "grace", "name": "Grace", "badges": ["DEADBEEF"], "status": "active",
         "expires": None, "roles": ["staff"], "inductions": {"laser": None}},
        {"id": "alan", "name": "Alan", "badges": ["CAFEBABE"], "status": "active",
         "expires": None, "roles": [], "inductions": {"cnc": None}},
        {"id": "hedy", "name": "Hedy", "badges": ["0A0B0C0D"], "status": "suspended",
         "expires": None, "roles": [], "inductions": {"laser": None}},
    ],
}
ADA, GRACE, ALAN, HEDY = "04A1B2C3D4E5F6", "DEADBEEF", "CAFEBABE", "0A0B0C0D"


def members_json(version: int = 1, members: list | None = None, generated_at: str | None = None) -> bytes:
    """A member list (MEMBERS unless `members`), generated at `generated_at` (MEMBERS' own by default)."""
    return json.dumps({**MEMBERS, "version": version, "members": members or MEMBERS["members"],
                       "generated_at": generated_at or MEMBERS["generated_at"]}).encode()


def config_text(storage: Path, machine_id: str = "laser-1", active_high: bool = False,
                machine: str = "", relay: str = "", extra: str = "") -> str:
    """The shared machine template (agent.devtools.machines) with TOML lines added to
    [machine] and [relay] and TOML text after it."""
    return machine_toml(machine_id, storage, active_high=active_high, extra=extra,
                        machine=tomllib.loads(machine), relay=tomllib.loads(relay))


def machine_files(tmp_path: Path, storage: Path | None = None, **config: Any) -> tuple[Path, Path, Path]:
    """A machine's config file, its storage dir and a member list file: (config, storage, members)."""
    storage = storage or tmp_path / "state"
    path = tmp_path / "agent.toml"
    path.write_text(config_text(storage, **config))
    members = tmp_path / "members.json"
    members.write_bytes(members_json())
    return path, storage, members


class FakeClock:
    """A clock the test moves; the agent's loop reads it."""

    def __init__(self) -> None:
        self.wall = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
        self.mono = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> Instant:
        with self._lock:
            return Instant(self.wall, self.mono)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.wall += dt.timedelta(seconds=seconds)
            self.mono += seconds


class RunningAgent:
    """An Agent on mock pins, its loop in a thread; `stop()` is idempotent.

    Not simulated, its reader is `reader`, a SimulatedReader, or with
    `config_reader` the one its config names, built on its pins as `fabpass run`
    builds it (the MFRC522 over an emulated chip whose doubles are installed).
    """

    def __init__(self, text: str, clock: Any = None, simulate: bool = True, connect: bool = False,
                 reader: Any = None, config_reader: bool = False) -> None:
        config = parse(text, "test.toml")
        config = dataclasses.replace(config, hardware=HardwareConfig(simulate=simulate))
        self.pins = MockFactory(pin_class=MockPWMPin)
        kwargs = {"clock": clock} if clock else {}
        if not simulate and not config_reader:
            from agent.hardware.simulated import SimulatedReader

            kwargs["reader"] = reader or SimulatedReader()
        self.agent = Agent(config, pins=self.pins, link=link_for(config) if connect else None, **kwargs)
        self.config = config
        self.relay_pin = self.pins.pin(config.relay.pin)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()
        assert self.agent.started.wait(10), "agent did not start"

    def tap(self, badge: str) -> dict[str, Any]:
        return self.agent.call(self.agent.tap, badge)

    def tick(self) -> None:
        """A loop turn at the clock's current time."""
        from agent.core.session import Tick

        self.agent.call(self.agent.handle, Tick())

    def apply(self, payload: bytes) -> dict[str, Any]:
        from agent.members.snapshot import load_json

        return self.agent.import_members(lambda: load_json(payload))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for _, p in self.agent.outbox.pending(0, 100_000)]

    def relay_is_on(self) -> bool:
        return self.relay_pin.state == (1 if self.config.relay.active_high else 0)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.agent.stop()
            self.thread.join(10)
            assert not self.thread.is_alive(), "agent did not stop"


def read_events(storage: Path) -> list[dict[str, Any]]:
    import sqlite3

    conn = sqlite3.connect(storage / "agent.db")
    try:
        return [json.loads(p) for (p,) in conn.execute("SELECT payload FROM events ORDER BY seq")]
    finally:
        conn.close()


class AgentProcess:
    """`fabpass run --config FILE --simulate` as a subprocess, like a Pi's service."""

    def __init__(self, config_path: Path, storage: Path, env: dict[str, str] | None = None,
                 wrapper: list[str] | None = None) -> None:
        """`wrapper`: a command the agent runs under (tests.support.noclock, say)."""
        self.config_path, self.storage = config_path, storage
        self.log = config_path.with_suffix(".log")
        self.env = {**os.environ, **(env or {})}
        self.wrapper = wrapper or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "agent", "run", "--config", str(self.config_path), "--simulate"],
                stdout=log, stderr=log, env=self.env)
        wait_for(self.answers, 20, f"the agent to answer (log: {self.log})")
        return self

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}: {self.log.read_text()}")
        try:
            request(self.storage, {"op": "status"}, timeout=2)
            return True
        except (NotRunning, ConnectionError, OSError):
            return False

    def ask(self, payload: dict[str, Any]) -> Any:
        return request(self.storage, payload)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(15)
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        self.proc = None


def by_seq(events: list[dict[str, Any]]) -> dict[int, set[str]]:
    """seq -> the event_ids it arrived under."""
    seqs: dict[int, set[str]] = {}
    for e in events:
        seqs.setdefault(e["seq"], set()).add(e["event_id"])
    return seqs


def assert_every_seq_once(events: list[dict[str, Any]], last_seq: int) -> None:
    """Every seq from 1 to last_seq arrived, each under exactly one event_id."""
    seqs = by_seq(events)
    missing = set(range(1, last_seq + 1)) - set(seqs)
    assert not missing, f"events never reached the broker: seq {sorted(missing)}"
    twice = {s: ids for s, ids in seqs.items() if len(ids) > 1}
    assert not twice, f"a seq arrived under two event_ids: {twice}"
