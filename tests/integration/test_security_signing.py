"""Signed member lists and commands, end to end: a real Mosquitto and a `fabpass run` process
configured with `[members] public_key`. Forged, unsigned, tampered, replayed or stale messages
change nothing but a rejection event; the admin's signed ones work.

The broker's ACL (tests/integration/test_broker_acl.py) already keeps machine accounts off the members
and command topics; these tests show the second wall: even a message that reaches the topic
(a machine account on a mis-configured broker, a stolen Pi's credentials) grants nobody.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from agent.signing import generate_keys, load_private_key, sign, sign_command
from tests.support.agents import ADA, HEDY, AgentProcess, config_text, members_json
from tests.support.helpers import Collector, publish, wait_for

MALLORY = "0BADC0DE"
MEMBERS_TOPIC = "fabpass/members"
COMMANDS_TOPIC = "fabpass/machines/laser-1/commands"


@pytest.fixture
def signed_stack(tmp_path, mosquitto):
    admin_key_path, admin_pub = generate_keys(tmp_path / "admin")
    other_key_path, _ = generate_keys(tmp_path / "mallory")
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=(
        f'[mqtt]\nurl = "{mosquitto.url}"\n'
        f'[members]\npublic_key = "{admin_pub.read_text().strip()}"\n')))
    events = Collector(mosquitto.port, "fabpass/machines/+/events")
    agent = AgentProcess(config, storage)

    class Stack:
        broker = mosquitto
        admin = load_private_key(admin_key_path)
        other = load_private_key(other_key_path)

        def __init__(self) -> None:
            self.agent, self.events, self.storage = agent, events, storage

        def of_type(self, kind: str) -> list[dict]:
            return [e for e in self.events.payloads() if e.get("type") == kind]

        def status(self) -> dict:
            return self.agent.ask({"op": "status"})

    try:
        agent.start()
        yield Stack()
    finally:
        agent.stop()
        events.close()


def member_list(version: int, with_mallory: bool = False) -> dict:
    obj = json.loads(members_json(version))
    if with_mallory:
        obj["members"].append({"id": "mallory", "name": "Mallory", "badges": [MALLORY], "status": "active",
                               "expires": None, "roles": ["staff"], "inductions": {"laser": None}})
        hedy = next(m for m in obj["members"] if m["id"] == "hedy")
        hedy["status"] = "active"
    return obj


def cache_fingerprint(storage: Path) -> tuple[int, str]:
    path = storage / "members.db"
    return path.stat().st_ino, hashlib.sha256(path.read_bytes()).hexdigest()


def forged_lists(s) -> dict[str, bytes]:
    tampered = sign(member_list(3), s.admin)
    tampered["members"] = member_list(3, with_mallory=True)["members"]  # changed after signing
    return {
        "signed_with_another_key": json.dumps(sign(member_list(3, True), s.other)).encode(),
        "unsigned_from_a_machine_account": json.dumps(member_list(3, True)).encode(),
        "tampered_after_signing": json.dumps(tampered).encode(),
        "sig_garbage": json.dumps({**member_list(3, True), "sig": "not base64!"}).encode(),
        "replay_of_an_older_signed_version": json.dumps(sign(member_list(1, True), s.admin)).encode(),
    }


def test_security_forged_member_lists_are_refused_and_the_cache_kept(signed_stack):
    s = signed_stack
    # An older version signed by the admin, kept by an attacker for a later replay.
    publish(s.broker.port, MEMBERS_TOPIC, json.dumps(sign(member_list(2), s.admin)).encode(), retain=True)
    wait_for(lambda: s.status()["members_version"] == 2, 10, "the admin's signed list")
    before = cache_fingerprint(s.storage)
    forged = forged_lists(s)
    for n, (name, payload) in enumerate(forged.items(), 1):
        publish(s.broker.port, MEMBERS_TOPIC, payload, retain=True)
        wait_for(lambda: len(s.of_type("members_rejected")) == n, 15, f"the rejection of {name}")
    rejected = s.of_type("members_rejected")
    errors = [r["error"] for r in rejected]
    assert "unsigned" in errors[1] and "bad signature" in errors[0] and "bad signature" in errors[2], errors
    assert "not newer" in errors[4], errors
    assert s.of_type("members_updated") == [s.of_type("members_updated")[0]], "only the admin's list was applied"
    assert cache_fingerprint(s.storage) == before, "the cache file was not touched"
    status = s.status()
    assert (status["members_version"], status["members_count"]) == (2, 4)
    assert s.agent.ask({"op": "tap", "badge": MALLORY})["reason"] == "unknown_badge", "the forger granted nobody"
    assert s.agent.ask({"op": "tap", "badge": HEDY})["reason"] == "suspended", "nor lifted a suspension"
    assert s.agent.ask({"op": "tap", "badge": ADA})["action"] == "started", "the last good list is in force"
    # The admin's next signed list still works after all that.
    publish(s.broker.port, MEMBERS_TOPIC, json.dumps(sign(member_list(4), s.admin)).encode(), retain=True)
    wait_for(lambda: s.status()["members_version"] == 4, 10, "the admin's next list")


def test_security_only_fresh_commands_signed_by_the_admin_are_obeyed(signed_stack):
    s = signed_stack
    wait_for(lambda: s.status()["broker"], 10, "the agent on the broker")
    now = dt.datetime.now(dt.timezone.utc)
    lock = {"v": 1, "command": "lock", "by": "tech", "reason": "tube change", "machine": "laser-1"}
    unlock = {"v": 1, "command": "unlock", "by": "tech", "reason": "done", "machine": "laser-1"}
    valid_lock = json.dumps(sign_command(lock, s.admin, now)).encode()
    refused = {
        "unsigned": json.dumps(lock).encode(),
        "signed_with_another_key": json.dumps(sign_command(lock, s.other, now)).encode(),
        "stale_ts": json.dumps(sign_command(lock, s.admin, now - dt.timedelta(minutes=10))).encode(),
        "tampered": json.dumps({**json.loads(valid_lock), "reason": "changed after signing"}).encode(),
        "for_another_machine": json.dumps(sign_command({**lock, "machine": "laser-2"}, s.admin, now)).encode(),
    }
    for n, (name, payload) in enumerate(refused.items(), 1):
        publish(s.broker.port, COMMANDS_TOPIC, payload)
        wait_for(lambda: len(s.of_type("command_rejected")) == n, 10, f"the rejection of the {name} command")
    assert not s.status()["locked"], "no refused command locked the machine"
    assert not s.of_type("machine_locked")
    publish(s.broker.port, COMMANDS_TOPIC, valid_lock)
    wait_for(lambda: s.status()["locked"], 10, "the admin's signed lock")
    publish(s.broker.port, COMMANDS_TOPIC, json.dumps(sign_command(unlock, s.admin, now)).encode())
    wait_for(lambda: not s.status()["locked"], 10, "the admin's signed unlock")
    publish(s.broker.port, COMMANDS_TOPIC, valid_lock)  # captured and played again: same nonce
    wait_for(lambda: len(s.of_type("command_rejected")) == len(refused) + 1, 10, "the replay's rejection")
    assert not s.status()["locked"], "the replayed lock was not obeyed"
    errors = [e["error"] for e in s.of_type("command_rejected")]
    assert "unsigned" in errors[0] and "bad signature" in errors[1] and "too old" in errors[2], errors
    assert "bad signature" in errors[3] and "laser-2" in errors[4] and "replayed" in errors[5], errors
    assert [e["by"] for e in s.of_type("machine_locked")] == ["tech"]
