"""agent.notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.notify import Notifier


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
    notifier.status("reader up\nrelay off")
    notifier.stopping()
    notifier.close()
    assert [_receive(sock) for _ in range(4)] == [
        "READY=1", "WATCHDOG=1", "STATUS=reader up relay off", "STOPPING=1"]


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"fabpass-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _receive(sock) == "READY=1"


def test_notify_is_a_noop_without_systemd() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
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
    with caplog.at_level(logging.WARNING, logger="agent.notify"):
        notifier.ready()
        notifier.watchdog()
        notifier.watchdog()
    assert len(caplog.records) == 1
    assert "cannot notify systemd" in caplog.records[0].getMessage()
