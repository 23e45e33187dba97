"""agent.daemon.systemd against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon.systemd import Notifier


def _receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its $NOTIFY_SOCKET value (a path)."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def test_notify_sends_each_state_to_the_socket(systemd_socket) -> None:
    sock, path = systemd_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert [_receive(sock) for _ in range(3)] == ["READY=1", "WATCHDOG=1", "STOPPING=1"]


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"fabpass-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _receive(sock) == "READY=1"


def test_notify_is_a_noop_without_systemd() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert notifier.address is None and notifier.watchdog_interval is None
    notifier.ready()
    notifier.watchdog()


def test_notify_watchdog_interval_is_half_the_timeout(systemd_socket) -> None:
    _, path = systemd_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval == 15.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0


@pytest.mark.parametrize("extra", [
    {},
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "soon"},
    {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
])
def test_notify_watchdog_interval_is_none_when_not_for_us(systemd_socket, extra) -> None:
    _, path = systemd_socket
    assert Notifier.from_env({"NOTIFY_SOCKET": path, **extra}).watchdog_interval is None


def test_notify_send_error_is_logged_once_and_never_raised(tmp_path: Path, caplog) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="agent.daemon.systemd"):
        notifier.ready()
        notifier.watchdog()
        notifier.watchdog()
    assert len(caplog.records) == 1
    assert "cannot notify systemd" in caplog.records[0].getMessage()


def test_notify_agent_under_systemd_says_ready_then_pings_the_watchdog(systemd_socket, tmp_path: Path) -> None:
    """`fabpass run --simulate` as systemd would start it (Type=notify, WatchdogSec=)."""
    sock, path = systemd_socket
    config = tmp_path / "agent.toml"
    config.write_text('[machine]\nid = "laser-1"\ninduction = "laser"\n[reader]\ntype = "simulated"\n'
                      f'[relay]\npin = 17\nactive_high = false\n[storage]\ndir = "{tmp_path}/state"\n')
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config), "--simulate"],
                                 env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        messages = [_receive(sock)]  # the socket's timeout is the deadline
        while "WATCHDOG=1" not in messages:
            messages.append(_receive(sock))
        assert "READY=1" in messages
        assert messages.index("READY=1") < messages.index("WATCHDOG=1")
        agent.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.append(_receive(sock))
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    assert agent.returncode == 0, log.read_text()
