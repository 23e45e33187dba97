"""One simulated machine: a real Agent on mock pins, in a thread, linked to the broker."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from agent.config import HardwareConfig, parse
from agent.daemon.agent import Agent, link_for
from agent.devtools.fleet.check import RelayFault
from agent.devtools.fleet.proc import made_by
from agent.devtools.machines import machine_toml

# How many agents one process can host: paho waits on its socket with select(), which
# fails for descriptors above 1023, and each agent holds about 14 (SQLite files, sockets).
MAX_AGENTS = 60


# Twenty agents stopping at once after a broker outage may need more than the
# default drain to deliver their last events.
DRAIN_S = 30.0


class SimMachine:
    """`start()` runs the agent's loop in a thread; `stop()` stops it (idempotent)."""

    def __init__(self, machine_id: str, induction: str, storage: Path, broker_url: str, prefix: str,
                 password_file: str | None = None, resend_after: str = "60s") -> None:
        self.id = self.name = machine_id
        self.storage = storage
        mqtt = {"url": broker_url, "topic_prefix": prefix, "resend_after": resend_after,
                **({"password_file": password_file} if password_file else {})}
        text = machine_toml(machine_id, storage, induction=induction, mqtt=mqtt)
        config = dataclasses.replace(parse(text, f"{machine_id}.toml"), hardware=HardwareConfig(simulate=True))
        self.config = config
        # Plain mock pins (no indicators here): a released pin keeps its last level, as a
        # relay input does; MockPWMPin would drive it low on close, "on" for active-low.
        self.pins = MockFactory()
        self.relay_pin = self.pins.pin(config.relay.pin)
        self.agent = Agent(config, pins=self.pins, link=link_for(config, drain_s=DRAIN_S))
        self.thread = threading.Thread(target=self.agent.run, name=f"agent-{machine_id}", daemon=True)

    @property
    def incarnation(self) -> str:
        return self.agent.outbox.incarnation

    def start(self, timeout: float = 15.0) -> None:
        self.thread.start()
        if not self.agent.started.wait(timeout):
            raise RuntimeError(f"{self.id}: the agent did not start within {timeout:.0f} s")

    def stop(self, wait: bool = True) -> None:
        if self.thread.is_alive():
            self.agent.stop()
            if wait:
                self.join()

    def join(self, timeout: float = DRAIN_S + 15) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"{self.id}: the agent did not stop within {timeout:.0f} s")

    def relay_on(self) -> bool:
        """What the relay board sees (active-low: on while the pin is low)."""
        return self.relay_pin.state == (1 if self.config.relay.active_high else 0)

    def relay_fault(self, when: str) -> RelayFault | None:
        """On the loop thread: a relay out of step with the session, or None."""
        in_session = self.agent.state.session is not None
        on = self.relay_on()
        return RelayFault(self.id, on, in_session, when) if on != in_session else None

    def tap(self, badge: str, timeout: float = 15.0) -> tuple[dict[str, Any], RelayFault | None, int]:
        """Tap and wait for the decision: (outcome, relay fault, last_seq right after it)."""
        def tap_and_look() -> tuple[dict[str, Any], RelayFault | None, int]:
            return self.agent.tap(badge), self.relay_fault("after a tap"), self.agent.outbox.last_seq

        return self.agent.call(tap_and_look, timeout=timeout)

    def submit_tap(self, badge: str) -> Any:
        """Tap without waiting; the future's result is last_seq right after the tap."""
        return self.agent.submit(lambda: (self.agent.tap(badge), self.agent.outbox.last_seq)[1])

    def sweep(self) -> RelayFault | None:
        return self.agent.call(lambda: self.relay_fault("sweep"))

    def status(self) -> dict[str, Any]:
        return self.agent.call(self.agent.status)

    def made(self) -> tuple[str, int]:
        """(incarnation, last_seq) from the outbox on disk."""
        return made_by(self.storage)
