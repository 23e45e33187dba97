"""A running agent with nothing happening: its CPU and its memory.

`fabpass run --simulate` as a subprocess (as systemd runs it, with mock pins
and the simulated reader), connected to a loopback Mosquitto, holding a
member list. Once it is connected and quiet, CPU is the growth of utime +
stime in /proc/PID/stat over the window, as a percentage of one core; RSS is
VmRSS from /proc/PID/status at the end of the window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.devtools.bench.common import config_text, member_list, ram_dir
from agent.devtools.localbroker import LocalBroker
from agent.devtools.wait import wait_for

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _status(storage: Path) -> dict[str, Any] | None:
    from agent.daemon.control import ControlError, NotRunning, request

    try:
        return request(storage, {"op": "status"}, timeout=2)
    except (NotRunning, ControlError, OSError):
        return None


def idle(seconds: float, members: int = 1000) -> dict[str, Any]:
    with ram_dir("idle") as storage, LocalBroker(storage) as broker:
        config = storage / "agent.toml"
        config.write_text(config_text(storage, broker_url=broker.url))
        snapshot = storage / "members.json"
        snapshot.write_bytes(member_list(members))
        log = open(storage / "agent.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config), "--simulate"],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
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
            ticks, start = _cpu_ticks(proc.pid), time.monotonic()
            time.sleep(seconds)
            ticks, wall = _cpu_ticks(proc.pid) - ticks, time.monotonic() - start
            rss = _rss_kb(proc.pid)
            return {
                "idle_cpu_percent": round(ticks / TICKS / wall * 100, 3),
                "idle_rss_mb": round(rss / 1024, 1),
                "idle_window_s": round(wall, 1),
                "idle_members": members,
            }
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            log.close()
