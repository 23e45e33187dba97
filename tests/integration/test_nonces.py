"""agent.daemon.nonces on a real outbox: a signed command's nonce survives a restart
(a reopened outbox) until its command would be too old anyway."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.daemon import nonces
from agent.daemon.nonces import Nonces
from agent.daemon.outbox import Outbox
from agent.link.commands import CommandError

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
WINDOW = dt.timedelta(seconds=60)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "agent.db"


def reopened(path) -> tuple[Outbox, Nonces]:
    outbox = Outbox(path, "laser-1")
    return outbox, Nonces(outbox)


def test_nonces_a_nonce_is_refused_again_after_a_restart(path):
    outbox, seen = reopened(path)
    seen.remember("abc", NOW + WINDOW, NOW)
    outbox.close()  # the agent restarts
    outbox, seen = reopened(path)
    try:
        with pytest.raises(CommandError, match="replayed"):
            seen.remember("abc", NOW + WINDOW, NOW + dt.timedelta(seconds=5))
        seen.remember("def", NOW + WINDOW, NOW)
    finally:
        outbox.close()


def test_nonces_are_forgotten_once_their_command_would_be_too_old(path):
    outbox, seen = reopened(path)
    try:
        for i in range(300):  # one signed command a second for five minutes
            at = NOW + dt.timedelta(seconds=i)
            seen.remember(f"n{i}", at + WINDOW, at)
        assert len(seen) == 61, "only the last max_age's nonces are kept"
        assert len(str(outbox.get(nonces.KEY))) < 61 * 60, "a few bytes each"
    finally:
        outbox.close()


def test_nonces_at_the_limit_a_new_command_is_refused_not_an_old_nonce_forgotten(path, monkeypatch):
    monkeypatch.setattr(nonces, "LIMIT", 3)
    outbox, seen = reopened(path)
    try:
        for n in "abc":
            seen.remember(n, NOW + WINDOW, NOW)
        with pytest.raises(CommandError, match="more than 3"):
            seen.remember("d", NOW + WINDOW, NOW)
        with pytest.raises(CommandError, match="replayed"):
            seen.remember("a", NOW + WINDOW, NOW)
        seen.remember("d", NOW + 2 * WINDOW, NOW + WINDOW + dt.timedelta(seconds=1))  # a, b, c expired
    finally:
        outbox.close()
