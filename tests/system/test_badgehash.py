"""Badge privacy: with a site key, no UID is stored, published or logged; taps still work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.members.badgehash import BadgeHasher, BadgeKeyError
from tests.support.agents import (
    ADA,
    GRACE,
    AgentProcess,
    RunningAgent,
    config_text,
    members_json,
)
from tests.support.helpers import Collector, wait_for

KEY = b"k" * 32


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "badge.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    return path


def test_badgehash_is_keyed_stable_and_leaves_hashes_alone():
    a, b = BadgeHasher(KEY), BadgeHasher(b"x" * 32)
    assert a(ADA) == a(ADA) != b(ADA)
    assert len(a(ADA)) == 64 and ADA not in a(ADA)
    assert a(a(ADA)) == a(ADA)


def test_badgehash_keeps_the_uid_prefix_of_secure_cards():
    """A `uid:` badge (accepted by UID alone on a secure reader) is hashed behind its prefix."""
    a = BadgeHasher(KEY)
    assert a("uid:" + ADA) == "uid:" + a(ADA)
    assert a(a("uid:" + ADA)) == a("uid:" + ADA)


def test_badgehash_key_file_must_be_private_and_long_enough(tmp_path):
    loose = tmp_path / "loose.key"
    loose.write_bytes(KEY)
    loose.chmod(0o644)
    with pytest.raises(BadgeKeyError, match="chmod 600"):
        BadgeHasher.from_file(loose)
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    with pytest.raises(BadgeKeyError, match="at least 16 bytes"):
        BadgeHasher.from_file(short)


def test_badgehash_agent_stores_and_reports_no_uid(tmp_path, key_file):
    storage = tmp_path / "state"
    agent = RunningAgent(config_text(storage, extra=f'[members]\nbadge_hash_key_file = "{key_file}"'))
    try:
        assert agent.apply(members_json())["applied"]  # a list with plain UIDs is hashed as it is applied
        assert agent.tap(ADA)["action"] == "started"
        assert agent.tap("11223344")["reason"] == "unknown_badge"
        events = agent.events()
    finally:
        agent.stop()
    badges = [e["badge"] for e in events if "badge" in e]
    hashed = BadgeHasher(KEY)
    assert badges == [hashed(ADA), hashed("11223344")]
    for db in ("members.db", "agent.db", "agent.db-wal"):
        path = storage / db
        if path.exists():
            data = path.read_bytes()
            assert ADA.encode() not in data and GRACE.encode() not in data, f"a UID in {db}"


def test_badgehash_publish_sends_only_hashes_and_the_agent_accepts_them(tmp_path, key_file, mosquitto):
    storage = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'
                                                f'[members]\nbadge_hash_key_file = "{key_file}"'))
    members = tmp_path / "members.json"
    members.write_bytes(members_json(version=3))
    retained = Collector(mosquitto.port, "fabpass/members")
    agent = AgentProcess(config, storage).start()
    try:
        published = subprocess.run(
            [sys.executable, "-m", "agent", "members", "publish", str(members), "--broker", mosquitto.url,
             "--hash-key", str(key_file)], capture_output=True, text=True, timeout=30)
        assert published.returncode == 0, published.stderr
        payload = wait_for(lambda: [p for _, p, _ in retained.messages], 10, "the list on the broker")[-1]
        assert ADA.encode() not in payload
        assert BadgeHasher(KEY)(ADA) in json.loads(payload)["members"][0]["badges"]
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 3, 10, "the list")
        assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started"
        check = subprocess.run([sys.executable, "-m", "agent", "members", "check", ADA, "--config", str(config),
                                "--json"], capture_output=True, text=True, timeout=30)
        assert json.loads(check.stdout) == {"granted": True, "action": "ended", "reason": None, "member_id": "ada"}
    finally:
        agent.stop()
        retained.close()
    assert ADA not in agent.log.read_text()
