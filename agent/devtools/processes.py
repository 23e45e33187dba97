"""Stopping the processes the tools start (an agent, a logbook, a broker): asked first,
killed if they do not stop in time."""

from __future__ import annotations

import subprocess

KILL_WAIT_S = 10.0


def stop_process(proc: subprocess.Popen, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout` seconds; whether it stopped when asked
    (true also when it had already exited)."""
    if proc.poll() is not None:
        return True
    proc.terminate()
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(KILL_WAIT_S)
        return False
