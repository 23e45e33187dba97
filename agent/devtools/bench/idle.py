"""A running agent with nothing happening: its CPU and its memory.

`fabpass run --simulate` as a subprocess (as systemd runs it, with mock pins
and the simulated reader), connected to a loopback Mosquitto, holding a
member list. Once it is connected and quiet, CPU is the growth of utime +
stime in /proc/PID/stat over the window, as a percentage of one core; RSS is
VmRSS from /proc/PID/status at the end of the window. `idle_secure_rss`: the
same for an agent with secure cards, `fabpass run` on mock pins with its
MFRC522 on the project's emulated chip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.devtools.bench.common import (
    config_text,
    master_key_file,
    member_list,
    ram_dir,
)
from agent.devtools.localbroker import LocalBroker
from agent.devtools.processes import stop_process
from agent.devtools.wait import wait_for

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    """VmRSS, or RssAnon (the process's own memory, without the pages of files it maps,
    which the kernel can drop and read again) from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def _status(storage: Path) -> dict[str, Any] | None:
    from agent.daemon.control import ControlError, NotRunning, request

    try:
        return request(storage, {"op": "status"}, timeout=2)
    except (NotRunning, ControlError, OSError):
        return None


# The agent with secure cards, as `fabpass run` starts it on a Pi (no --simulate), its
# MFRC522 the project's emulated chip behind doubles of spidev and RPi.GPIO.
SECURE_RUN = ("import sys\n"
              "from agent.devtools.emulated_mfrc522 import EmulatedMFRC522, RealTime, installed\n"
              "from agent.cli import main\n"
              "with installed({(0, 0): EmulatedMFRC522(clock=RealTime())}):\n"
              "    main(['run', '--config', sys.argv[1]])\n")


@contextmanager
def _running(storage: Path, broker: LocalBroker, members: int, secure: bool) -> Iterator[subprocess.Popen]:
    """An agent process, connected to `broker`, holding `members` members, settled."""
    config = storage / "agent.toml"
    if secure:
        key, _ = master_key_file(storage)
        reader = {"type": "mfrc522", "secure": "ntag424", "card_key_file": str(key)}
        command = [sys.executable, "-c", SECURE_RUN, str(config)]
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    else:
        reader, command, env = None, [sys.executable, "-m", "agent", "run", "--config", str(config), "--simulate"], None
    config.write_text(config_text(storage, broker_url=broker.url, reader=reader))
    snapshot = storage / "members.json"
    snapshot.write_bytes(member_list(members))
    log = open(storage / "agent.log", "ab")
    proc = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited {proc.returncode}: "
                                   f"{(storage / 'agent.log').read_text(errors='replace')[-2000:]}")
            status = _status(storage)
            return bool(status and status["broker"])

        wait_for(ready, 30, "the agent to connect to the broker", step=0.05)
        from agent.daemon.control import request

        imported = request(storage, {"op": "import", "path": str(snapshot)})
        if not imported.get("applied"):
            raise RuntimeError(f"the member list was not imported: {imported}")
        time.sleep(1.0)  # let the start-up and the import settle
        yield proc
    finally:
        stop_process(proc, 15)
        log.close()


def idle(seconds: float, members: int = 1000) -> dict[str, Any]:
    with ram_dir("idle") as storage, LocalBroker(storage) as broker, _running(storage, broker, members, False) as proc:
        ticks, start = _cpu_ticks(proc.pid), time.monotonic()
        time.sleep(seconds)
        ticks, wall = _cpu_ticks(proc.pid) - ticks, time.monotonic() - start
        rss = _rss_kb(proc.pid)
        return {
            "idle_cpu_percent": round(ticks / TICKS / wall * 100, 3),
            "idle_rss_mb": round(rss / 1024, 1),
            "idle_rss_anon_mb": round(_rss_kb(proc.pid, "RssAnon") / 1024, 1),
            "idle_window_s": round(wall, 1),
            "idle_members": members,
        }


def idle_secure_rss(members: int = 1000, seconds: float = 2.0) -> dict[str, Any]:
    """The RSS of an agent with secure cards (the `cryptography` package loaded for the
    card checks, the MFRC522 reader and its driver): as `idle`, `seconds` after it settled.
    Its CPU would be the emulated chip's, so it is not reported here (see reader_idle)."""
    with ram_dir("idle-secure") as storage, LocalBroker(storage) as broker, \
            _running(storage, broker, members, True) as proc:
        time.sleep(seconds)
        if "cryptography" not in Path(f"/proc/{proc.pid}/maps").read_text():
            raise RuntimeError("the agent with secure cards has not loaded its card verifier")
        return {"idle_rss_secure_mb": round(_rss_kb(proc.pid) / 1024, 1),
                "idle_rss_secure_anon_mb": round(_rss_kb(proc.pid, "RssAnon") / 1024, 1)}
