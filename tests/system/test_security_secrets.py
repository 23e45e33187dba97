"""File permissions and secrets: what the agent leaves on disk, in its log and on the broker."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import (
    ADA,
    AgentProcess,
    config_text,
    machine_files,
    members_json,
)
from tests.support.helpers import Collector, publish, wait_for

SECRET = "s3cret-Pa55-zebra"


class umask:
    """The umask a child process inherits, for the duration of a block."""

    def __init__(self, mask: int) -> None:
        self.mask = mask

    def __enter__(self) -> None:
        self.old = os.umask(self.mask)

    def __exit__(self, *exc) -> None:
        os.umask(self.old)


def world_writable(root: Path) -> list[str]:
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if mode & stat.S_IWOTH and not stat.S_ISLNK(mode):
            found.append(f"{path} {stat.filemode(mode)}")
    return found


def run_agent_with_events(tmp_path: Path, mask: int) -> Path:
    config, storage, members = machine_files(tmp_path)
    agent = AgentProcess(config, storage)
    try:
        with umask(mask):
            agent.start()
        agent.ask({"op": "import", "path": str(members), "version": None})
        agent.ask({"op": "tap", "badge": ADA})
        assert (storage / "agent.db").exists() and (storage / "members.db").exists()
        assert world_writable(storage) == [], "while running"
    finally:
        agent.stop()
    return storage


def test_security_storage_files_are_not_world_writable(tmp_path):
    storage = run_agent_with_events(tmp_path, 0o022)
    assert world_writable(storage) == []
    assert (storage / "agent.db").exists()


def test_security_storage_is_not_world_writable_even_with_a_permissive_umask(tmp_path):
    """The shipped unit sets UMask=0027 and StateDirectoryMode=0750, but the agent must not
    depend on it: a world-writable storage dir lets any local user swap members.db for a
    list of their own (the cache is trusted once applied; signatures are checked only on
    the way in)."""
    run_agent_with_events(tmp_path, 0o000)


def test_security_keys_generate_writes_a_0600_key_even_with_a_permissive_umask(tmp_path):
    with umask(0o000):
        done = subprocess.run([sys.executable, "-m", "agent", "keys", "generate", str(tmp_path / "keys")],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    key = tmp_path / "keys" / "signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().strip() not in done.stdout + done.stderr, "the private key is never printed"


@pytest.fixture
def password_broker(tmp_path, mosquitto_factory):
    """A broker where laser-1 must give SECRET (anonymous clients, like the test's collector, may read)."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "laser-1", SECRET], check=True,
                   capture_output=True)
    passwd.chmod(0o600)
    return mosquitto_factory(f"password_file {passwd}\n", anonymous=True)


@pytest.mark.parametrize("where", ["environment", "password_file", "url", "wrong_password"])
def test_security_the_mqtt_password_never_appears_in_logs_events_status_or_storage(
        tmp_path, password_broker, where):
    broker = password_broker
    storage = tmp_path / "state"
    config = tmp_path / "laser-1.toml"
    env: dict[str, str] = {}
    url = f"mqtt://laser-1@127.0.0.1:{broker.port}"
    mqtt = ""
    password = SECRET if where != "wrong_password" else SECRET + "-wrong"
    if where in ("environment", "wrong_password"):
        env["FABPASS_MQTT_PASSWORD"] = password
    elif where == "password_file":
        secret_file = tmp_path / "mqtt.password"
        secret_file.write_text(password + "\n")
        secret_file.chmod(0o600)
        mqtt = f'password_file = "{secret_file}"\n'
    else:
        url = f"mqtt://laser-1:{password}@127.0.0.1:{broker.port}"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "{url}"\n{mqtt}'))
    seen = Collector(broker.port, "fabpass/#")
    agent = AgentProcess(config, storage, env=env)
    try:
        agent.start()
        if where == "wrong_password":
            wait_for(lambda: "refused the connection" in agent.log.read_text(), 15, "the broker to refuse")
            assert not agent.ask({"op": "status"})["broker"]
        else:
            wait_for(lambda: agent.ask({"op": "status"})["broker"], 15, "the agent to log in with the password")
            publish(broker.port, "fabpass/members", members_json(), retain=True)
            wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the list")
        for _ in range(2):
            agent.ask({"op": "tap", "badge": ADA})
        status = agent.ask({"op": "status"})
        if where != "wrong_password":
            wait_for(lambda: agent.ask({"op": "status"})["outbox"] == 0, 10, "the events to reach the broker")
            assert any(b'"session_ended"' in m[1] for m in seen.messages)
    finally:
        agent.stop()
        seen.close()
    assert SECRET not in agent.log.read_text(), f"the password is in the agent's log ({where})"
    assert SECRET not in json.dumps(status)
    assert not [m for m in seen.messages if SECRET.encode() in m[1]], "the password went out over MQTT"
    for path in storage.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the password is stored in {path}"
