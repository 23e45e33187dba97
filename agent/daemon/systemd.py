"""The systemd notify protocol (sd_notify) with the standard library.

systemd passes a datagram socket in $NOTIFY_SOCKET (a path, or an abstract
name written with a leading '@'); a service of `Type=notify` says `READY=1`
there when it can do its job, and with `WatchdogSec=` it must say `WATCHDOG=1`
more often than $WATCHDOG_USEC or systemd kills and restarts it. Outside
systemd (no $NOTIFY_SOCKET) every call is a no-op, and a failing send is
logged once, never raised: a notification must not take the agent down.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes:
    """A socket address from $NOTIFY_SOCKET: '@name' is the abstract name '\\0name'."""
    return b"\0" + value[1:].encode() if value.startswith("@") else value


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Half of $WATCHDOG_USEC in seconds, as sd_watchdog_enabled(3) advises; None when
    the watchdog is off or meant for another process ($WATCHDOG_PID)."""
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Sends state changes to systemd; harmless where there is no systemd."""

    def __init__(self, address: str | bytes | None, watchdog_interval: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval if address is not None else None
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        env = os.environ if env is None else env
        value = env.get("NOTIFY_SOCKET")
        address = _address(value) if value else None
        return cls(address, _watchdog_interval(env, os.getpid() if pid is None else pid))

    def ready(self) -> None:
        self.send("READY=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self.address)
        except OSError as err:
            if not self._failed:
                log.warning("cannot notify systemd at %r: %s", self.address, err)
                self._failed = True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
