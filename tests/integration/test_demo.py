"""`fabpass demo`: the newcomer's tour runs the real agent on a scripted clock, and with
--broker it publishes under its own prefix, never into the lab's real logbook."""

from __future__ import annotations

import json
import re

from agent.devtools.demo import MEMBERS, run_demo
from agent.members.snapshot import load_csv, load_json
from tests.support import ROOT
from tests.support.helpers import Collector, wait_for


def test_demo_prints_the_timeline_without_a_broker() -> None:
    lines: list[str] = []
    assert run_demo(lines.append) == 0
    text = "\n".join(lines)
    assert "Ada Lovelace      taps 04A1B2C3D4E5F6  -> granted, relay ON" in text
    assert "Alan Turing       taps CAFEBABE        -> DENIED (not_inducted)" in text
    assert "staff ends Ada Lovelace's session, relay off" in text
    assert "they wait in the outbox" in text
    # at the machine: a trainer inducts Alan, who may then use the laser; a card listed by the
    # number printed on it; a badge enrolled for a member who had none
    assert re.search(r"Alan Turing +taps CAFEBABE +-> inducted by trainer Katherine Johnson", text)
    assert re.search(r"Alan Turing +taps CAFEBABE +-> granted", text)
    assert re.search(r"Margaret Hamilton +taps 0A0045B352 +-> granted", text)
    assert re.search(r"Mary Jackson +taps 04D00D1E +-> badge enrolled for Mary Jackson", text)
    assert re.search(r"Mary Jackson +taps 04D00D1E +-> granted", text)
    readme = (ROOT / "README.md").read_text().split("printed as a timeline:", 1)[1].split("```")[1]
    shown = [line for line in readme.strip().splitlines() if line != "…"]
    assert shown and all(line in lines for line in shown), "the README's timeline is not the demo's"


def test_demo_with_a_broker_publishes_under_its_own_prefix(mosquitto) -> None:
    everything = Collector(mosquitto.port, "#")
    try:
        lines: list[str] = []
        assert run_demo(lines.append, mosquitto.url) == 0
        wait_for(lambda: any(t.endswith("/events") for t, _, _ in everything.messages), 10, "the demo's events")
        topics = {topic for topic, _, _ in everything.messages}
        assert "fabpass-demo/machines/laser-1/events" in topics
        assert not [t for t in topics if t.startswith("fabpass/")], "the demo wrote into the lab's own topics"
        assert "0 not yet acknowledged by the broker" in lines[-1]
    finally:
        everything.close()


def test_demo_sample_member_list_is_the_demos() -> None:
    sample = load_csv((ROOT / "config" / "members.csv").read_text(), version=1)
    demo = load_json(json.dumps(MEMBERS))
    assert list(sample.members()) == list(demo.members())


def test_demo_with_a_broker_does_not_throw_the_real_machine_off(tmp_path, mosquitto, caplog) -> None:
    """The demo's machine is laser-1 too: its client id must not be the real agent's."""
    import logging

    from tests.support.agents import RunningAgent, config_text

    caplog.set_level(logging.WARNING, logger="fabpass.mqtt")
    real = RunningAgent(config_text(tmp_path, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'), connect=True)
    try:
        wait_for(lambda: real.agent.link.connected, 10, "the real agent's connection")
        assert run_demo(lambda line: None, mosquitto.url) == 0
        assert real.agent.link.connected
        assert not [r for r in caplog.records if "disconnected" in r.getMessage()]
    finally:
        real.stop()
