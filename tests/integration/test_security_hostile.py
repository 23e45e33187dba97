"""One hostile message on the members topic must not stop the agent from taking the next good list."""

from __future__ import annotations

from tests.support.agents import AgentProcess, config_text, members_json
from tests.support.helpers import Collector, publish, wait_for

DEEP_LIST = b'{"v":1,"version":9,"members":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}"


def test_security_deeply_nested_member_list_is_rejected_and_list_sync_goes_on(tmp_path, mosquitto):
    """agent/members/snapshot.py load_json raises RecursionError on deep nesting; ListSync.take
    catches only ValueError/OSError, so the error ends AgentLink._list_worker (agent/link/agentlink.py)
    and no later list is ever applied until the agent restarts: a denial of service by
    anyone who can publish to the members topic once (suspensions stop taking effect)."""
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'))
    events = Collector(mosquitto.port, "fabpass/machines/+/events")
    agent = AgentProcess(config, storage)
    try:
        agent.start()
        publish(mosquitto.port, "fabpass/members", members_json(version=1), retain=True)
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the first list")
        publish(mosquitto.port, "fabpass/members", DEEP_LIST, retain=True)
        # Wait until the hostile list has been handled (rejected, or the sync thread died),
        # so the good list cannot simply replace it in the queue before it is read.
        wait_for(lambda: rejections(events) or "Exception in thread" in agent.log.read_text(), 10,
                 "the hostile list to be handled")
        publish(mosquitto.port, "fabpass/members", members_json(version=2), retain=True)
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 2, 10,
                 "the good list published after the hostile one")
        assert len(rejections(events)) == 1, "the hostile list is rejected with an event"
    finally:
        agent.stop()
        events.close()


def rejections(events: Collector) -> list[dict]:
    return [e for e in events.payloads() if e.get("type") == "members_rejected"]
