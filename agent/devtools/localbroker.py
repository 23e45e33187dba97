"""A throwaway Mosquitto on a free loopback port, for simulations and benchmarks.

Persistence is on (in `workdir`), so `stop()` then `start()` is a broker
outage that keeps every session and queued message, as a restarted lab
broker does. Example::

    with LocalBroker(Path(tmp)) as broker:
        print(broker.url)          # mqtt://127.0.0.1:PORT
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from agent.devtools.processes import stop_process
from agent.devtools.wait import wait_for
from agent.link.broker import Broker

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerNotInstalled(FileNotFoundError):
    pass


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH or in the usual sbin folders, or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in CANDIDATES if os.access(path, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class LocalBroker:
    """Mosquitto listening on 127.0.0.1 only; `start()` and `stop()` may alternate."""

    def __init__(self, workdir: Path, extra_config: str = "", anonymous: bool = True) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerNotInstalled("mosquitto is not installed (apt install mosquitto), "
                                     "or give a broker with --broker")
        self.binary = binary
        self.workdir = Path(workdir)
        self.port = free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 0",  # no limit: nothing queued for an offline client is dropped
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to `mosquitto`, who cannot write workdir
        self.conf.write_text("\n".join(lines) + "\n" + extra_config)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def broker(self) -> Broker:
        return Broker("127.0.0.1", self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it accepts connections; RuntimeError with its log if it cannot."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        proc = self.proc
        try:
            wait_for(lambda: port_open(self.port) or proc.poll() is not None, timeout, "mosquitto", step=0.02)
        except TimeoutError:
            pass
        if not port_open(self.port):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}: "
                               f"{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL after 5 s; idempotent."""
        if self.proc is not None:
            stop_process(self.proc, 5)
        self.proc = None

    def restart(self, forget: bool = False) -> None:
        """Stop and start again on the same port; `forget` drops what it saved (its
        sessions, queued and retained messages), as a broker without persistence does."""
        self.stop()
        if forget:
            (self.workdir / "mosquitto.db").unlink(missing_ok=True)
        self.start()

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
