"""`fabpass logs tail` names members as the retained list names them (a real Mosquitto)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.support.agents import members_json
from tests.support.helpers import publish, read_line


def event(seq: int, type_: str, **fields) -> bytes:
    return json.dumps({"v": 1, "event_id": f"e-{seq}", "seq": seq, "type": type_, "machine": "laser-1",
                       "ts": "2026-12-03T10:00:00.000Z", **fields}).encode()


def test_logs_tail_names_the_members_of_the_retained_list(mosquitto):
    publish(mosquitto.port, "fabpass/members", members_json(), retain=True)
    tail = subprocess.Popen([sys.executable, "-m", "agent", "logs", "tail", "--broker", mosquitto.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "following fabpass/machines/+/events" in read_line(tail.stderr, 15)
        publish(mosquitto.port, "fabpass/machines/laser-1/events", event(1, "session_started", member_id="ada",
                                                                          badge="04A1B2C3D4E5F6"))
        assert "Ada (ada) started badge 04A1B2C3D4E5F6" in read_line(tail.stdout, 15)
        publish(mosquitto.port, "fabpass/machines/laser-1/events", event(2, "induction_granted", member_id="alan",
                                                                          induction="laser", by="grace", expires=None))
        assert "Alan (alan) inducted on laser by Grace (grace)" in read_line(tail.stdout, 15)
        publish(mosquitto.port, "fabpass/members", b"{broken", retain=True)  # refused: the last good names stay
        publish(mosquitto.port, "fabpass/machines/laser-1/events", event(3, "out_of_order_reported", by="ada"))
        assert "OUT OF ORDER reported by Ada (ada)" in read_line(tail.stdout, 15)
        nobody = json.dumps({"v": 1, "version": 2, "generated_at": None, "members": []})
        publish(mosquitto.port, "fabpass/members", nobody, retain=True)  # a list without Ada
        publish(mosquitto.port, "fabpass/machines/laser-1/events", event(4, "out_of_order_reported", by="ada"))
        assert read_line(tail.stdout, 15).rstrip().endswith("OUT OF ORDER reported by ada")
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 0
