"""The archive: what an agent writes to its SD card per event, and how fast a logbook
started late catches up.

`outbox_bytes`: `fabpass run --simulate` as a subprocess, its storage on a real
disk, a loopback Mosquitto and a logbook (`fabpass logbook run`) confirming what
it archives. Taps through the control socket, alternately starting and ending a
session (one event each), each once the one before is confirmed, at a lab's
pace: the mark arrives between two taps. The figure is the growth of
`write_bytes` in /proc/PID/io (the bytes the process made the kernel write to
the disk: SQLite's pages, its WAL frames, their checkpoints) over the taps, per
event; `wchar` (the bytes handed to write()) beside it. Its log goes to tmpfs,
as on a Pi it goes to journald. `code` runs another version's agent (the tree
of an older checkout), to compare them in turns.

`heartbeat_bytes`: what a heartbeat costs: a commit of the open session's
meta (`Outbox.commit([], meta)`), 200 of them on a real disk, /proc/self/io
per commit, and per hour of an open session.

`archive_catch_up`: 20 agents (in this process, storage on tmpfs) each make
1,000 events (a busy lab's day) with a broker and no logbook; then a logbook
starts, its database on a real disk: events per second from its start until
it holds them all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from agent.devtools.bench.common import (
    config_text,
    disk_dir,
    fs_type,
    load_config,
    member_list,
    ram_dir,
)
from agent.devtools.localbroker import LocalBroker
from agent.devtools.processes import stop_process
from agent.devtools.wait import wait_for


def _io(pid: int | str) -> dict[str, int]:
    with open(f"/proc/{pid}/io", encoding="ascii") as io:
        return {key: int(value) for key, value in (line.split(": ") for line in io)}


def _request(storage: Path, payload: dict[str, Any]) -> Any:
    from agent.daemon.control import request

    return request(storage, payload, timeout=10)


def outbox_bytes(taps: int, code: Path | None = None) -> dict[str, Any]:
    from agent.devtools.fleet.proc import LogbookProc

    with disk_dir("bytes") as storage, ram_dir("bytes-log") as logs, LocalBroker(logs) as broker:
        config = storage / "agent.toml"
        config.write_text(config_text(storage, broker_url=broker.url))
        snapshot = logs / "members.json"
        snapshot.write_bytes(member_list(10))
        logbook = LogbookProc(logs / "logbook.db", broker.url, "fabpass", f"bench-{uuid.uuid4().hex[:8]}")
        logbook.start()
        env = {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}
        with open(logs / "agent.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config), "--simulate"],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=logs)
        try:
            def status() -> dict[str, Any] | None:
                if proc.poll() is not None:
                    raise RuntimeError(f"the agent exited {proc.returncode}: "
                                       f"{(logs / 'agent.log').read_text(errors='replace')[-2000:]}")
                with contextlib.suppress(ConnectionError, OSError, ValueError):
                    return _request(storage, {"op": "status"})
                return None

            def settled() -> bool:
                """Confirmed by the logbook (an agent without marks: acknowledged by the broker)."""
                now = status()
                return bool(now and now["broker"] and now.get("unarchived", now["outbox"]) == 0)

            wait_for(lambda: (status() or {}).get("broker"), 30, "the agent to connect", step=0.05)
            if not _request(storage, {"op": "import", "path": str(snapshot), "version": None}).get("applied"):
                raise RuntimeError("the member list was not imported")
            badge = member_list_badge()
            wait_for(settled, 30, "the start-up's events to be confirmed", step=0.02)
            before, seq = _io(proc.pid), status()["last_seq"]
            for _ in range(taps):
                _request(storage, {"op": "tap", "badge": badge})
                wait_for(settled, 30, "the tap's event to be confirmed", step=0.01)
            after, events = _io(proc.pid), status()["last_seq"] - seq
            return {
                "outbox_bytes_per_event": round((after["write_bytes"] - before["write_bytes"]) / events),
                "outbox_wchar_per_event": round((after["wchar"] - before["wchar"]) / events),
                "outbox_bytes_events": events,
                "outbox_bytes_fs": fs_type(storage),
            }
        finally:
            stop_process(proc, 20)
            logbook.stop()


def member_list_badge() -> str:
    from agent.devtools.bench.common import badges_of

    return badges_of(0)[0]


def heartbeat_bytes(commits: int = 200) -> dict[str, Any]:
    from agent.daemon.agent import HEARTBEAT_S
    from agent.daemon.outbox import Outbox

    with disk_dir("heartbeat") as work:
        outbox = Outbox(work / "agent.db", "bench-1")
        try:
            start = dt.datetime(2026, 11, 25, 9, tzinfo=dt.timezone.utc)
            session = {"member_id": "m-000001", "badge": "04A1B2C3D4E5F6", "started": "2026-11-25T09:00:00.000Z"}
            outbox.commit([("session_started", {"member_id": "m-000001", "badge": "04A1B2C3D4E5F6"})], start,
                          {"session": {**session, "alive": "2026-11-25T09:00:00.000Z", "duration_s": 0.0}})
            before = _io("self")
            for n in range(1, commits + 1):
                at = start + dt.timedelta(seconds=n * HEARTBEAT_S)
                outbox.commit([], at, {"session": {**session, "alive": at.isoformat(), "duration_s": n * HEARTBEAT_S}})
            after = _io("self")
        finally:
            outbox.close()
    per_beat = (after["write_bytes"] - before["write_bytes"]) / commits
    return {"heartbeat_bytes": round(per_beat), "heartbeat_bytes_per_hour": round(per_beat * 3600 / HEARTBEAT_S),
            "heartbeat_fs": fs_type(work)}


def archive_catch_up(machines: int = 20, events: int = 1000) -> dict[str, Any]:
    from gpiozero.pins.mock import MockFactory

    from agent.core.model import EventType
    from agent.daemon.agent import Agent, link_for
    from agent.devtools.fleet.proc import LogbookProc
    from agent.hardware.simulated import SimulatedReader

    with ram_dir("catch-up") as root, disk_dir("catch-up-db") as db_dir, LocalBroker(root) as broker, \
            contextlib.ExitStack() as stack:
        agents = []
        for i in range(machines):
            config = load_config(root / f"bench-{i:02d}", broker_url=broker.url, machine_id=f"bench-{i:02d}")
            agent = Agent(config, pins=MockFactory(), reader=SimulatedReader(), link=link_for(config, drain_s=0))
            thread = _run(agent)
            stack.callback(_stop, agent, thread)
            agents.append(agent)
        now = dt.datetime.now(dt.timezone.utc)
        for i, agent in enumerate(agents):
            for first in range(0, events, 500):
                agent.outbox.commit([(EventType.ACCESS_DENIED, {"badge": f"{0xA0000000 + n:08X}", "reason": "unknown_badge"})
                                     for n in range(first, min(events, first + 500))], now)
            agent.link.wake()
        wait_for(lambda: all(a.outbox.unacknowledged == 0 for a in agents), 300,
                 "the broker to take every event (nobody is listening)", step=0.05)
        expected = sum(a.outbox.last_seq for a in agents)
        logbook = LogbookProc(db_dir / "logbook.db", broker.url, "fabpass", f"bench-{uuid.uuid4().hex[:8]}")
        stack.callback(logbook.stop)
        started = time.perf_counter()
        logbook.start()
        reader = sqlite3.connect(db_dir / "logbook.db", timeout=10)
        try:
            wait_for(lambda: _count(reader) >= expected, 600, "the logbook to catch up", step=0.05)
        finally:
            reader.close()
        took = time.perf_counter() - started
        return {
            "archive_catch_up_events_per_s": round(expected / took),
            "archive_catch_up_events": expected,
            "archive_catch_up_machines": machines,
            "archive_catch_up_s": round(took, 2),
            "archive_catch_up_fs": fs_type(db_dir),
        }


def _count(reader: sqlite3.Connection) -> int:
    with contextlib.suppress(sqlite3.OperationalError):  # the collector is still creating its tables
        return reader.execute("SELECT count(*) FROM events").fetchone()[0]
    return 0


def _run(agent: Any) -> Any:
    import threading

    thread = threading.Thread(target=agent.run, name=f"bench-{agent.id}", daemon=True)
    thread.start()
    if not agent.started.wait(30):
        raise RuntimeError(f"{agent.id} did not start")
    return thread


def _stop(agent: Any, thread: Any) -> None:
    agent.stop()
    thread.join(30)
