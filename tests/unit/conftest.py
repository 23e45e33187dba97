"""The unit tier: pure code only. A test here that opens a database, a socket or a
process fails, so the tier stays fast and a newcomer can trust its name."""

from __future__ import annotations

import socket
import sqlite3
import subprocess

import pytest


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a unit test may not use {what}: move it to tests/integration")
    return refuse


@pytest.fixture(autouse=True)
def _pure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "connect", _refuse("SQLite"))
    monkeypatch.setattr(socket, "socket", _refuse("sockets"))
    monkeypatch.setattr(subprocess, "Popen", _refuse("processes"))
