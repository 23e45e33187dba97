"""A really full disk: the agent's storage on a tiny tmpfs, filled to the last byte.

(The other full-disk tests cap SQLite with max_page_count; this one lets the
kernel say ENOSPC, as an SD card would.) Mounting needs root, as CI has.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.agents import ADA, AgentProcess, machine_files, read_events
from tests.support.helpers import wait_for


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "state"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(directory) -> int:
    """Write a filler file until the filesystem is full; return its size."""
    written = 0
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            written += os.write(fd, b"\0" * 4096)
    except OSError:
        return written
    finally:
        os.close(fd)


def test_reliability_enospc_refuses_new_sessions_ends_the_current_one_and_recovers(tmp_path, tiny_disk):
    config, _, members = machine_files(tmp_path, storage=tiny_disk)
    agent = AgentProcess(config, tiny_disk).start()
    try:
        assert agent.ask({"op": "import", "path": str(members), "version": None})["applied"]
        assert agent.ask({"op": "tap", "badge": ADA})["relay"] is True
        assert fill(tiny_disk) > 0
        ended = agent.ask({"op": "tap", "badge": ADA})
        assert ended["action"] == "ended" and ended["relay"] is False, "ending never waits for the disk"
        refused = agent.ask({"op": "tap", "badge": ADA})
        assert refused == {"action": "refused", "granted": False, "reason": "storage_error", "relay": False,
                           "member_id": "ada"}
        assert agent.ask({"op": "status"})["relay"] is False
        (tiny_disk / "filler").unlink()
        # The end and the refusal kept in memory reach the disk on their own.
        wait_for(lambda: [e["type"] for e in read_events(tiny_disk)][-2:] == ["session_ended", "access_denied"],
                 10, "the events held in memory")
        assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started", "recovered by itself"
    finally:
        agent.stop()
    events = read_events(tiny_disk)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert sum(e["type"] == "session_ended" for e in events) == 2  # badge_off, then shutdown
