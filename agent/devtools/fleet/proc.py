"""Machines and a logbook as processes of their own, for chaos: `fabpass run --simulate`
and `fabpass logbook run`, each killable with SIGKILL as a power cut or a crash would.

An `AgentProc` is tapped through its control socket, as `fabpass tap` does;
its relay is judged from its status (the in-process SimMachine reads the pin
itself). Everything it prints goes to a log file beside its storage.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.daemon.storage import OUTBOX_FILE
from agent.devtools.fleet.check import RelayFault
from agent.devtools.machines import machine_toml
from agent.devtools.processes import stop_process
from agent.devtools.wait import wait_for

START_S = 30.0
STOP_S = 45.0  # SIGTERM: the agent drains for up to its drain time, then stops


class AgentProc:
    """One `fabpass run --simulate` process; `start()`, `kill()` and `stop()` may alternate."""

    def __init__(self, machine_id: str, induction: str, storage: Path, broker_url: str, prefix: str,
                 resend_after: str = "5s", name: str | None = None) -> None:
        self.id = machine_id
        self.name = name or machine_id  # a twin shares the id, not the name
        self.storage = storage
        self.config = storage.parent / f"{self.name}.toml"
        self.config.write_text(machine_toml(machine_id, storage, induction=induction, mqtt={
            "url": broker_url, "topic_prefix": prefix, "keepalive": 5, "resend_after": resend_after}))
        self.log = storage.parent / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.incarnation = ""  # its storage's, known once started

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(self.config),
                                          "--simulate"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_for(self._answers, START_S, f"{self.name} to start (log: {self.log})")
        self.incarnation = self.status()["incarnation"]

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: see {self.log}")
        try:
            self.status()
            return True
        except (ConnectionError, OSError, ValueError):
            return False

    def kill(self) -> None:
        """SIGKILL: nothing recorded, nothing switched; the next start closes an open session."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, wait: bool = True) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            if wait:
                self.join()

    def join(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise RuntimeError(f"{self.name} did not stop within {STOP_S:.0f} s") from None

    def _ask(self, payload: dict[str, Any]) -> Any:
        from agent.daemon.control import request

        return request(self.storage, payload, timeout=10)

    def status(self) -> dict[str, Any]:
        return self._ask({"op": "status"})

    def tap(self, badge: str) -> tuple[dict[str, Any], RelayFault | None, int]:
        """Tap and wait for the decision: (outcome, relay fault, last_seq right after it)."""
        outcome = self._ask({"op": "tap", "badge": badge})
        status = self.status()
        return outcome, self._fault(status, "after a tap"), status["last_seq"]

    def sweep(self) -> RelayFault | None:
        return self._fault(self.status(), "sweep")

    def _fault(self, status: dict[str, Any], when: str) -> RelayFault | None:
        in_session = status["member_id"] is not None
        return RelayFault(self.name, status["relay"], in_session, when) if status["relay"] != in_session else None

    def made(self) -> tuple[str, int]:
        """(incarnation, last_seq) from the outbox on disk, the agent running or not."""
        return made_by(self.storage)


def made_by(storage: Path) -> tuple[str, int]:
    """(incarnation, last_seq) of the outbox in `storage`: seq 1 to last_seq is what that
    incarnation made (events leave the outbox once archived; the counter stays)."""
    conn = sqlite3.connect(storage / OUTBOX_FILE)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()
    return json.loads(meta["incarnation"]), json.loads(meta.get("last_seq", "0"))


class LogbookProc:
    """`fabpass logbook run` with a persistent session; `start()`, `kill()`, `stop()` alternate."""

    def __init__(self, db: Path, broker_url: str, prefix: str, client_id: str) -> None:
        self.db, self.log = db, db.with_suffix(".log")
        self.args = [sys.executable, "-m", "agent", "logbook", "run", "--broker", broker_url, "--db", str(db),
                     "--prefix", prefix, "--client-id", client_id, "--session-expiry", "1h"]
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.db.exists() or not self.running, START_S, "the logbook to open its database")
        if not self.running:
            raise RuntimeError(f"the logbook exited {self.proc.returncode}: see {self.log}")

    def kill(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 20)
