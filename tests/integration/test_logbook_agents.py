"""The logbook with real agents: `fabpass run --simulate` processes, a real Mosquitto,
`fabpass logbook run` as a process, and the technicians' queries."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.support.agents import (
    ADA,
    ALAN,
    GRACE,
    AgentProcess,
    config_text,
    members_json,
)
from tests.support.helpers import publish, wait_for


def fabpass(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60)


def sessions(db) -> list[dict]:
    result = fabpass("logbook", "sessions", "--db", str(db), "--json")
    return json.loads(result.stdout) if result.returncode == 0 else []


def test_logbook_agents_sessions_from_two_machines_reach_the_archive(tmp_path, mosquitto):
    db = tmp_path / "logbook.db"
    agents = []
    for machine in ("laser-1", "laser-2"):
        config = tmp_path / f"{machine}.toml"
        config.write_text(config_text(tmp_path / machine, machine_id=machine,
                                      extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'))
        agents.append(AgentProcess(config, tmp_path / machine))
    with open(tmp_path / "logbook.log", "wb") as log:
        logbook = subprocess.Popen([sys.executable, "-m", "agent", "logbook", "run", "--broker", mosquitto.url,
                                    "--db", str(db)], stdout=log, stderr=log)
    try:
        for agent in agents:
            agent.start()
        publish(mosquitto.port, "fabpass/members", members_json(), retain=True)
        for agent in agents:
            wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
        laser1, laser2 = agents
        laser1.ask({"op": "tap", "badge": ADA})
        laser2.ask({"op": "tap", "badge": GRACE})
        laser2.ask({"op": "tap", "badge": ALAN})  # refused: not inducted on the laser
        laser1.ask({"op": "tap", "badge": ADA})
        wait_for(lambda: len(sessions(db)) == 2, 20, "both sessions in the archive")
        rows = {row["machine"]: row for row in sessions(db)}
        assert rows["laser-1"]["member_id"] == "ada" and rows["laser-1"]["end_reason"] == "badge_off"
        assert rows["laser-2"]["member_id"] == "grace" and rows["laser-2"]["end"] is None, "still open"
        laser2.kill(signal.SIGTERM)  # ends grace's session with `shutdown`
        wait_for(lambda: {r["machine"]: r for r in sessions(db)}["laser-2"]["end_reason"] == "shutdown", 20,
                 "the shutdown end")
        report = json.loads(fabpass("logbook", "report", "--db", str(db), "--json").stdout)
        assert report["refusals"] == [{"machine": "laser-2", "reason": "not_inducted", "count": 1}]
    finally:
        for agent in agents:
            agent.stop()
        logbook.send_signal(signal.SIGTERM)
        assert logbook.wait(15) == 0
