"""`fabpass members publish` and `members refresh` against a real Mosquitto: versions that
only grow against the retained list, bounded, never twice the same; a refresh that keeps
the list's members and makes it new."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.members.version import MAX_VERSION
from agent.signing import generate_keys, load_private_key, sign
from tests.support.agents import ADA, AgentProcess, config_text, members_json
from tests.support.helpers import Collector, publish, wait_for

CSV = "id,name,badges,status,expires,roles,inductions\n"
TOPIC = "fabpass/members"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text(CSV + f"m-1,Ada,{ADA},active,,,laser\n")
    return path


def retained(port: int) -> dict:
    """The retained list, read as a fresh subscriber would."""
    collector = Collector(port, TOPIC)
    try:
        return json.loads(wait_for(lambda: collector.messages and collector.messages[-1][1], 10, "the retained list"))
    finally:
        collector.close()


def test_cli_members_publish_after_a_date_version_still_reaches_the_agents(tmp_path, mosquitto, csv_file):
    """Finding 3: after one list published with --version 20261202001 (a date), every
    default publish (Unix seconds) was refused by every agent while publish said OK."""
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'))
    agent = AgentProcess(config, storage).start()
    try:
        assert run("members", "publish", csv_file, "--broker", mosquitto.url, "--version", "20261202001").exit_code == 0
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 20261202001, 10, "the dated list")
        suspended = tmp_path / "suspended.csv"
        suspended.write_text(CSV + f"m-1,Ada,{ADA},suspended,,,laser\n")
        done = run("members", "publish", suspended, "--broker", mosquitto.url)
        assert done.exit_code == 0, done.output
        version = retained(mosquitto.port)["version"]
        assert version > 20261202001
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == version, 10, "the suspension")
        assert agent.ask({"op": "tap", "badge": ADA})["reason"] == "suspended"
    finally:
        agent.stop()


def test_cli_members_publish_default_version_is_unix_milliseconds(mosquitto, csv_file):
    before = int(time.time() * 1000)
    assert run("members", "publish", csv_file, "--broker", mosquitto.url).exit_code == 0
    assert before <= retained(mosquitto.port)["version"] <= int(time.time() * 1000)


def test_cli_members_publish_twice_at_once_gives_two_versions(mosquitto, csv_file):
    """Finding 3: two lists published in the same second got the same version: agents kept
    one, the broker retained the other."""
    versions = []
    for _ in range(2):
        assert run("members", "publish", csv_file, "--broker", mosquitto.url).exit_code == 0
        versions.append(retained(mosquitto.port)["version"])
    assert versions[1] > versions[0]


def test_cli_members_publish_version_not_above_the_retained_exits_2_naming_both(mosquitto, csv_file):
    assert run("members", "publish", csv_file, "--broker", mosquitto.url, "--version", "500").exit_code == 0
    for version in ("500", "499"):
        done = run("members", "publish", csv_file, "--broker", mosquitto.url, "--version", version)
        assert done.exit_code == 2, done.output
        assert f"--version {version}" in done.output and "retained version 500" in done.output
    assert retained(mosquitto.port)["version"] == 500, "nothing was published"


def test_cli_members_publish_a_json_list_not_above_the_retained_exits_2(tmp_path, mosquitto):
    publish(mosquitto.port, TOPIC, members_json(version=7), retain=True)
    old = tmp_path / "old.json"
    old.write_bytes(members_json(version=6))
    done = run("members", "publish", old, "--broker", mosquitto.url)
    assert done.exit_code == 2 and "version 6" in done.output and "retained version 7" in done.output
    assert retained(mosquitto.port)["version"] == 7


@pytest.mark.parametrize("version", [str(MAX_VERSION + 1), "9" * 4300])
def test_cli_members_publish_refuses_a_version_above_2_pow_53(tmp_path, mosquitto, csv_file, version):
    """Finding 3: a 4,300-digit version was accepted, and nothing could ever follow it."""
    done = run("members", "publish", csv_file, "--broker", mosquitto.url, "--version", version)
    assert done.exit_code == 2, done.output
    huge = tmp_path / "huge.json"
    huge.write_text(members_json().decode().replace('"version": 1', f'"version": {version}'))
    done = run("members", "publish", huge, "--broker", mosquitto.url)
    assert done.exit_code == 2 and "9007199254740991" in done.output, done.output
    assert run("members", "publish", csv_file, "--broker", mosquitto.url, "--version", MAX_VERSION).exit_code == 0


def test_cli_members_agents_refuse_a_version_above_2_pow_53(tmp_path, mosquitto):
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'))
    events = Collector(mosquitto.port, "fabpass/machines/+/events")
    agent = AgentProcess(config, storage).start()
    try:
        publish(mosquitto.port, TOPIC, members_json(version=3), retain=True)
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 3, 10, "the list")
        huge = members_json().decode().replace('"version": 1', f'"version": {"9" * 4300}')
        publish(mosquitto.port, TOPIC, huge, retain=True)
        rejected = wait_for(lambda: [e for e in events.payloads() if e["type"] == "members_rejected"], 20,
                            "the refusal")
        assert "9007199254740991" in rejected[0]["error"]
        publish(mosquitto.port, TOPIC, members_json(version=4), retain=True)
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 4, 10, "the next list")
    finally:
        agent.stop()
        events.close()


# --- members refresh -----------------------------------------------------------------------------

@pytest.fixture
def admin_key(tmp_path):
    key_path, pub_path = generate_keys(tmp_path / "admin")
    return key_path, pub_path.read_text().strip()


def test_cli_members_refresh_keeps_the_members_and_signs_with_the_admins_key(tmp_path, mosquitto, admin_key):
    key_path, pub = admin_key
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'
                                                 f'[members]\npublic_key = "{pub}"\nmax_list_age = "1d"\n'))
    old = sign(json.loads(members_json(version=9, generated_at="2026-01-01T00:00:00Z")), load_private_key(key_path))
    publish(mosquitto.port, TOPIC, json.dumps(old).encode(), retain=True)
    agent = AgentProcess(config, storage).start()
    try:
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 9, 10, "the old signed list")
        assert agent.ask({"op": "tap", "badge": ADA})["reason"] == "stale_member_list"
        done = run("members", "refresh", "--broker", mosquitto.url, "--sign-key", key_path)
        assert done.exit_code == 0 and "refreshed version 9" in done.output and "(signed)" in done.output, done.output
        fresh = retained(mosquitto.port)
        assert fresh["members"] == old["members"] and fresh["version"] > 9 and fresh["sig"] != old["sig"]
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == fresh["version"], 10, "the refresh")
        assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started"
    finally:
        agent.stop()


def test_cli_members_refresh_never_signs_a_list_its_key_did_not_sign(mosquitto, admin_key):
    """Someone who can publish on the broker leaves an unsigned (or forged) list there: a
    refresh with the admin's key must not launder it into a signed one."""
    key_path, _ = admin_key
    forged = members_json(version=3)
    publish(mosquitto.port, TOPIC, forged, retain=True)
    done = run("members", "refresh", "--broker", mosquitto.url, "--sign-key", key_path)
    assert done.exit_code == 2 and "not signed by --sign-key's key" in done.output, done.output
    assert json.loads(json.dumps(retained(mosquitto.port))) == json.loads(forged), "nothing was published"


def test_cli_members_refresh_of_a_signed_list_needs_the_key(mosquitto, admin_key):
    key_path, _ = admin_key
    publish(mosquitto.port, TOPIC, json.dumps(sign(json.loads(members_json(version=3)),
                                                   load_private_key(key_path))).encode(), retain=True)
    done = run("members", "refresh", "--broker", mosquitto.url)
    assert done.exit_code == 2 and "give --sign-key" in done.output
    assert retained(mosquitto.port)["version"] == 3


def test_cli_members_refresh_without_a_retained_list_exits_2(mosquitto):
    done = run("members", "refresh", "--broker", mosquitto.url)
    assert done.exit_code == 2 and "no member list is retained" in done.output


def test_cli_members_refresh_leaves_a_list_published_meanwhile_alone(mosquitto, monkeypatch):
    """A suspension published while a refresh reads and signs a big list must not be
    overwritten by the refresh's older members."""
    from agent.cli import members as command

    publish(mosquitto.port, TOPIC, members_json(version=3), retain=True)
    real = command._retained_list
    reads = []

    def read_then_publish(broker, topic):
        payload = real(broker, topic)
        if not reads:  # the admin publishes between the refresh's read and its check
            publish(mosquitto.port, TOPIC, members_json(version=4), retain=True)
        reads.append(payload)
        return payload

    monkeypatch.setattr(command, "_retained_list", read_then_publish)
    done = run("members", "refresh", "--broker", mosquitto.url)
    assert done.exit_code == 1 and "changed while it was being refreshed" in done.output
    assert retained(mosquitto.port)["version"] == 4, "the admin's list stays"
