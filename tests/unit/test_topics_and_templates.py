"""One module builds every topic and parses them back; one template makes the
machine configs of the demo, the fleet, the bench and the tests."""

from __future__ import annotations

import tomllib

import pytest

from agent.config import parse
from agent.devtools.machines import machine_toml
from agent.link.topics import Topics


def test_topics_build_and_parse_back() -> None:
    topics = Topics("lab")
    assert topics.status("laser-1") == "lab/machines/laser-1/status"
    assert topics.events() == "lab/machines/+/events"
    assert topics.parse(topics.sim_tap("cnc")) == ("cnc", "sim/tap")
    assert topics.parse(topics.commands("cnc")) == ("cnc", "commands")


@pytest.mark.parametrize("topic", ["lab/members", "other/machines/x/status", "lab/machines/", "lab/machines/x"])
def test_topics_parse_refuses_what_is_not_a_machine_topic(topic: str) -> None:
    assert Topics("lab").parse(topic) is None


def test_machine_toml_quotes_any_path_or_url_and_parses_as_a_config() -> None:
    storage = 'C:\\odd "dir"\n#1'
    text = machine_toml("laser-1", storage, machine={"max_session": "4h", "hours": ["mon 09:00-18:00"]},
                        mqtt={"url": "mqtt://u:p%40ss@host:1883", "keepalive": 10}, extra='[members]\nmax_list_age = "7d"\n')
    assert tomllib.loads(text)["storage"]["dir"] == storage
    config = parse(text)
    assert config.machine.max_session == 4 * 3600 and config.mqtt.keepalive == 10
    assert config.members.max_list_age == 7 * 86400 and not config.relay.active_high
