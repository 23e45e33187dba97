"""Commands that cannot be replayed or land late (issue 17, findings 4 and 5): a real
Mosquitto and `fabpass run` processes. A signed command's nonce is remembered across
restarts; every command carries its time and is refused once older than
`[commands] max_age`; end_session and lock --now name the session they mean."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from agent.core.timespec import rfc3339
from agent.signing import generate_keys, load_private_key, sign_command
from tests.support.agents import ADA, GRACE, AgentProcess, config_text, members_json
from tests.support.helpers import Collector, publish, wait_for

COMMANDS = "fabpass/machines/laser-1/commands"


class Stack:
    def __init__(self, tmp_path, mosquitto, members: str = "", commands: str = "") -> None:
        self.broker = mosquitto
        self.storage = tmp_path / "state"
        config = tmp_path / "laser-1.toml"
        config.write_text(config_text(self.storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'
                                                          f"[members]\n{members}\n[commands]\n{commands}\n"))
        self.events = Collector(mosquitto.port, "fabpass/machines/+/events")
        self.agent = AgentProcess(config, self.storage)

    def start(self) -> Stack:
        self.agent.start()
        wait_for(lambda: self.status()["broker"], 10, "the agent on the broker")
        return self

    def status(self) -> dict:
        return self.agent.ask({"op": "status"})

    def tap(self, badge: str) -> dict:
        return self.agent.ask({"op": "tap", "badge": badge})

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events.payloads() if e.get("type") == kind]

    def send(self, command: dict) -> None:
        publish(self.broker.port, COMMANDS, json.dumps(command).encode())

    def rejected(self, n: int) -> str:
        """The n-th command_rejected's error, once it has arrived."""
        return wait_for(lambda: self.of_type("command_rejected")[n - 1:], 10, f"rejection {n}")[0]["error"]

    def close(self) -> None:
        self.agent.stop()
        self.events.close()


@pytest.fixture
def keys(tmp_path):
    key_path, pub_path = generate_keys(tmp_path / "admin")
    return load_private_key(key_path), pub_path.read_text().strip()


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def test_commands_a_signed_command_replayed_after_a_restart_is_refused(tmp_path, mosquitto, keys):
    """Finding 4: a captured unlock was refused as a replay, then obeyed once the agent had
    restarted: its nonces lived in memory only."""
    key, pub = keys
    s = Stack(tmp_path, mosquitto, members=f'public_key = "{pub}"').start()
    try:
        unlock = sign_command({"v": 1, "command": "unlock", "by": "tech", "reason": "", "machine": "laser-1"},
                              key, now())
        s.send(sign_command({"v": 1, "command": "lock", "by": "tech", "reason": "tube", "machine": "laser-1"},
                            key, now()))
        wait_for(lambda: s.status()["locked"], 10, "the signed lock")
        s.send(unlock)
        wait_for(lambda: not s.status()["locked"], 10, "the signed unlock")
        s.send(sign_command({"v": 1, "command": "lock", "by": "tech", "reason": "again", "machine": "laser-1"},
                            key, now()))
        wait_for(lambda: s.status()["locked"], 10, "the second lock")
        s.agent.stop()
        s.agent.start()
        wait_for(lambda: s.status()["broker"], 10, "the agent back on the broker")
        s.send(unlock)  # captured, and played again after the restart
        assert "replayed" in s.rejected(1)
        assert s.status()["locked"], "the replayed unlock was not obeyed"
    finally:
        s.close()


def test_commands_a_late_end_session_without_a_time_does_not_end_the_next_members_session(tmp_path, mosquitto):
    """Finding 5: an end-session sent while the Pi's network was down arrives minutes later
    and ended the next member's session. An unsigned command carried no time."""
    s = Stack(tmp_path, mosquitto).start()
    try:
        publish(mosquitto.port, "fabpass/members", members_json(), retain=True)
        wait_for(lambda: s.status()["members_version"] == 1, 10, "the list")
        assert s.tap(ADA)["action"] == "started"
        late = {"v": 1, "command": "end_session", "reason": "", "by": "tech", "machine": "laser-1"}  # as sent then
        s.tap(ADA)
        assert s.tap(GRACE)["action"] == "started"  # the next member
        s.send(late)
        assert "ts" in s.rejected(1)
        assert s.status()["member_id"] == "grace", "the next member's session goes on"
    finally:
        s.close()


def test_commands_older_than_max_age_or_from_the_future_are_refused(tmp_path, mosquitto):
    s = Stack(tmp_path, mosquitto, commands='max_age = "60s"').start()
    try:
        lock = {"v": 1, "command": "lock", "by": "tech", "reason": "tube", "machine": "laser-1"}
        s.send({**lock, "ts": rfc3339(now() - dt.timedelta(seconds=120))})
        assert "120 s ago" in s.rejected(1) or "too old" in s.rejected(1)
        s.send({**lock, "ts": rfc3339(now() + dt.timedelta(seconds=120))})
        assert "future" in s.rejected(2)
        s.send({**lock, "ts": "yesterday"})
        assert "RFC 3339" in s.rejected(3)
        assert not s.status()["locked"]
        s.send({**lock, "ts": rfc3339(now())})
        wait_for(lambda: s.status()["locked"], 10, "a command of now")
    finally:
        s.close()


def test_commands_end_session_and_lock_now_end_only_the_session_they_name(tmp_path, mosquitto):
    s = Stack(tmp_path, mosquitto).start()
    try:
        publish(mosquitto.port, "fabpass/members", members_json(), retain=True)
        wait_for(lambda: s.status()["members_version"] == 1, 10, "the list")
        s.tap(ADA)
        adas = s.status()["since"]
        s.tap(ADA)
        s.tap(GRACE)
        graces = s.status()["since"]
        base = {"v": 1, "by": "tech", "reason": "", "machine": "laser-1"}
        s.send({**base, "command": "end_session", "session": adas, "ts": rfc3339(now())})
        assert "not the one in progress" in s.rejected(1)
        s.send({**base, "command": "lock", "now": True, "session": adas, "ts": rfc3339(now())})
        assert "not the one in progress" in s.rejected(2)
        status = s.status()
        assert (status["member_id"], status["locked"]) == ("grace", False), "nothing happened"
        s.send({**base, "command": "end_session", "session": graces, "ts": rfc3339(now())})
        wait_for(lambda: s.status()["member_id"] is None, 10, "the session named")
        wait_for(lambda: [e for e in s.of_type("session_ended") if e["reason"] == "remote"], 10, "its event")
    finally:
        s.close()
