"""The outbox: one durable commit on a real disk, and replaying a backlog to a real broker.

`outbox_commit` times `Outbox.commit` of one `session_started` event with the
session kept in meta (what a granted tap writes) in a directory on a real disk,
never tmpfs: with `synchronous=FULL` every commit waits for fsync, so this is
the disk's figure as much as ours. The filesystem is reported with it.

`outbox_replay` fills an agent's outbox while its broker is absent, then starts
Mosquitto on the port the agent is trying and times from the agent's
(re)connection until the outbox is empty: every event published with QoS 1,
acknowledged by the broker and deleted. The reconnect wait (paho's back-off)
is reported apart, as `outbox_replay_reconnect_s`. The agent's warning that it
cannot reach its broker is held back for that planned outage: it is not news
to the person running the bench.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from agent.core.model import EventType
from agent.devtools.bench.common import (
    disk_dir,
    fs_type,
    load_config,
    percentile,
    ram_dir,
)
from agent.devtools.localbroker import LocalBroker
from agent.devtools.wait import wait_for

SESSION = {"member_id": "m-000001", "badge": "04000000000001", "started": "2026-11-25T09:00:00Z"}


def outbox_commit(commits: int) -> dict[str, Any]:
    from agent.daemon.outbox import Outbox

    with disk_dir("outbox") as work:
        outbox = Outbox(work / "agent.db", "bench-1")
        try:
            now = dt.datetime.now(dt.timezone.utc)
            times = []
            for i in range(commits):
                on = i % 2 == 0
                record = ((EventType.SESSION_STARTED, {"member_id": "m-000001", "badge": "04000000000001"}) if on else
                          (EventType.SESSION_ENDED, {"member_id": "m-000001", "duration_s": 1.0, "reason": "badge_off"}))
                start = time.perf_counter()
                outbox.commit([record], now, {"session": SESSION if on else None, "locked": False})
                times.append(time.perf_counter() - start)
            return {
                "outbox_commit_p50_ms": round(percentile(times, 50) * 1000, 3),
                "outbox_commit_p99_ms": round(percentile(times, 99) * 1000, 3),
                "outbox_commit_fs": fs_type(work),
                "outbox_commit_count": commits,
            }
        finally:
            outbox.close()


@contextlib.contextmanager
def _planned_outage() -> Iterator[None]:
    def unplanned(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("cannot reach broker")

    link_log = logging.getLogger("fabpass.mqtt")
    link_log.addFilter(unplanned)
    try:
        yield
    finally:
        link_log.removeFilter(unplanned)


def outbox_replay(events: int) -> dict[str, Any]:
    from gpiozero.pins.mock import MockFactory

    from agent.daemon.agent import Agent, link_for
    from agent.hardware.simulated import SimulatedReader

    with ram_dir("replay") as storage:
        broker = LocalBroker(storage)
        config = load_config(storage, broker_url=broker.url)
        agent = Agent(config, pins=MockFactory(), reader=SimulatedReader(), link=link_for(config))
        thread = threading.Thread(target=agent.run, name="bench-replay-agent", daemon=True)
        try:
            with _planned_outage():
                thread.start()
                if not agent.started.wait(30):
                    raise RuntimeError("the agent did not start")
                now = dt.datetime.now(dt.timezone.utc)
                batch = 500
                for first in range(0, events, batch):
                    agent.outbox.commit([(EventType.ACCESS_DENIED, {"badge": f"{0xA0000000 + i:08X}",
                                                            "reason": "unknown_badge"})
                                         for i in range(first, min(events, first + batch))], now)
                queued = agent.outbox.unacknowledged
                started = time.perf_counter()
                broker.start()
                wait_for(lambda: agent.link.connected, 30, "the agent to connect to the broker", step=0.001)
            up = time.perf_counter()
            wait_for(lambda: agent.outbox.unacknowledged == 0, 300, "the broker to take every event", step=0.02)
            drained = time.perf_counter()
            return {
                "outbox_replay_events_per_s": round(queued / (drained - up)),
                "outbox_replay_events": queued,
                "outbox_replay_s": round(drained - up, 3),
                "outbox_replay_reconnect_s": round(up - started, 3),
            }
        finally:
            agent.stop()
            if thread.is_alive():
                thread.join(15)
            broker.stop()
