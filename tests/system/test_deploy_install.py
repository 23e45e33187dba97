"""deploy/install.sh in a temporary root (--root).

The commands that would change this machine (useradd, usermod, chown,
systemctl) are stubs on PATH that record their arguments, and FABPASS_PYTHON
is a stub that makes a venv whose pip records what it would install: the
test needs neither root's powers over this machine nor the network. The rest
of the script runs for real, and what it writes is read back with the
agent's own config loader.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import load, parse
from tests.support import ROOT

INSTALL = ROOT / "deploy" / "install.sh"

# Each stub appends "name arg arg…" to $CALLS. useradd and usermod also do
# their job in the fake root's passwd and group files, so a second run sees it.
STUBS = {
    "useradd": 'sed -i "$ a fabpass:x:999:999::/var/lib/fabpass:/usr/sbin/nologin" "$FAKE_ROOT/etc/passwd"',
    "usermod": 'group=${*: -2:1}; sed -i "/^$group:/ { /:$/ s/$/fabpass/; /:$/! s/$/,fabpass/ }" '
               '"$FAKE_ROOT/etc/group"',
    "chown": "",
    "systemctl": "",
    "pip": "",
    # python3 -m venv --system-site-packages DIR: a venv whose pip is a stub and whose
    # python is the one running the tests (it has fabpass's dependencies, as the real venv would).
    "python-for-venv": 'dir=${*: -1}; mkdir -p "$dir/bin"; cp "$(dirname "$0")/pip" "$dir/bin/pip"; '
                       'printf "#!/bin/sh\\nexec %s \\"\\$@\\"\\n" "$TEST_PYTHON" >"$dir/bin/python"; chmod +x "$dir/bin/python"',
}


@dataclass
class FakeRoot:
    root: Path
    stubs: Path
    calls_log: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PATH": f"{self.stubs}:{os.environ['PATH']}",
            "FABPASS_PYTHON": str(self.stubs / "python-for-venv"),
            "CALLS": str(self.calls_log),
            "FAKE_ROOT": str(self.root),
            "TEST_PYTHON": sys.executable,
        }
        env.pop("FABPASS_ROOT", None)
        done = subprocess.run([str(INSTALL), "--root", str(self.root), *args],
                              env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def calls(self) -> list[list[str]]:
        if not self.calls_log.exists():
            return []
        return [line.split() for line in self.calls_log.read_text().splitlines()]

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def snapshot(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}


@pytest.fixture
def fake(tmp_path: Path) -> FakeRoot:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\nspi:x:999:pi\ngpio:x:997:pi\n")
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "config.txt").write_text("[all]\ndtparam=audio=on\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, body in STUBS.items():
        stub = stubs / name
        stub.write_text(f'#!/usr/bin/env bash\nset -eu\necho "{name} $*" >>"$CALLS"\n{body}\n')
        stub.chmod(0o755)
    return FakeRoot(root, stubs, tmp_path / "calls.log")


@pytest.fixture
def secrets(tmp_path: Path) -> tuple[Path, Path]:
    password = tmp_path / "laser-1.password"
    password.write_text("s3cret-password\n")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nlab CA\n-----END CERTIFICATE-----\n")
    return password, ca


LASER = ("--machine-id", "laser-1", "--name", "Laser cutter (Trotec & co)", "--induction", "laser",
         "--relay-pin", "22", "--active-low")


def test_deploy_install_help_lists_every_option() -> None:
    done = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, check=True)
    script = INSTALL.read_text()
    options = re.findall(r"^\s+(--[a-z][a-z-]*)\)", script, re.MULTILINE)  # the argument parser's cases
    assert len(options) > 10
    assert [option for option in options if option not in done.stdout] == []


def test_deploy_install_dry_run_changes_nothing_and_shows_the_config(fake: FakeRoot, secrets) -> None:
    password, ca = secrets
    before = fake.snapshot()
    done = fake.run("--dry-run", *LASER, "--broker", "mqtts://broker.lab:8883",
                    "--broker-password-file", str(password), "--broker-ca-file", str(ca), "--enable-spi")
    assert fake.snapshot() == before
    assert fake.calls() == []
    out = done.stdout
    for path in ("/etc/fabpass/agent.toml", "/etc/fabpass/mqtt.password", "/etc/fabpass/ca.crt",
                 "/etc/systemd/system/fabpass.service", "/opt/fabpass/libexec/relay-off"):
        assert f"would write {fake.path(path)}" in out
    assert "s3cret" not in out
    assert "would run: useradd" in out and "would append to" in out
    shown = out.split(f"would write {fake.path('/etc/fabpass/agent.toml')} (mode 0640, owner root:fabpass)\n")[1]
    lines = list(itertools.takewhile(lambda line: line.startswith("    "), shown.splitlines()))
    config = parse("".join(line[4:] + "\n" for line in lines))
    assert (config.machine.id, config.relay.pin, config.relay.active_high) == ("laser-1", 22, False)
    assert config.mqtt.url == "mqtts://broker.lab:8883"


def test_deploy_install_writes_a_working_install(fake: FakeRoot, secrets) -> None:
    password, ca = secrets
    fake.run(*LASER, "--broker", "mqtts://broker.lab:8883", "--broker-password-file", str(password),
             "--broker-ca-file", str(ca), "--enable-spi")

    config = load(fake.path("/etc/fabpass/agent.toml"))
    assert config.machine.id == "laser-1"
    assert config.machine.name == "Laser cutter (Trotec & co)"
    assert config.machine.induction == "laser"
    assert config.reader.type == "mfrc522"
    assert (config.relay.pin, config.relay.active_high) == (22, False)
    assert config.storage.dir == Path("/var/lib/fabpass")
    assert (config.mqtt.url, config.mqtt.username) == ("mqtts://broker.lab:8883", "laser-1")
    assert (config.mqtt.password_file, config.mqtt.ca_file) == ("/etc/fabpass/mqtt.password", "/etc/fabpass/ca.crt")

    modes = {path: fake.path(path).stat().st_mode & 0o777 for path in (
        "/etc/fabpass/agent.toml", "/etc/fabpass/mqtt.password", "/etc/fabpass/ca.crt",
        "/etc/systemd/system/fabpass.service", "/opt/fabpass/libexec/relay-off")}
    assert modes == {"/etc/fabpass/agent.toml": 0o640, "/etc/fabpass/mqtt.password": 0o640,
                     "/etc/fabpass/ca.crt": 0o644, "/etc/systemd/system/fabpass.service": 0o644,
                     "/opt/fabpass/libexec/relay-off": 0o755}
    assert fake.path("/etc/fabpass/mqtt.password").read_text() == password.read_text()
    assert fake.path("/etc/systemd/system/fabpass.service").read_bytes() == (ROOT / "deploy/fabpass.service").read_bytes()
    assert fake.path("/opt/fabpass/libexec/relay-off").read_bytes() == (ROOT / "deploy/relay-off").read_bytes()
    assert "dtparam=spi=on" in fake.path("/boot/firmware/config.txt").read_text().splitlines()

    calls = fake.calls()
    root = str(fake.root)
    assert ["useradd", "--root", root, "--system", "--user-group"] == calls[0][:5] and calls[0][-1] == "fabpass"
    assert [c[-2] for c in calls if c[0] == "usermod"] == ["gpio", "spi", "dialout"]
    assert ["python-for-venv", "-m", "venv", "--system-site-packages", f"{root}/opt/fabpass"] in calls
    assert [c for c in calls if c[0] == "pip"][0][-1] == f"{ROOT}[pi]"
    assert ["chown", "root:fabpass"] in [c[:2] for c in calls]
    assert calls[-1] == ["systemctl", f"--root={root}", "enable", "fabpass.service"]
    assert "fabpass" in fake.path("/etc/group").read_text().split("gpio:x:997:")[1].splitlines()[0]


def test_deploy_install_twice_keeps_the_config_and_repeats_nothing(fake: FakeRoot) -> None:
    fake.run(*LASER, "--enable-spi")
    config_before = fake.path("/etc/fabpass/agent.toml").read_bytes()
    first = len(fake.calls())
    again = fake.run("--machine-id", "cnc-1", "--induction", "cnc", "--active-high", "--enable-spi")
    assert fake.path("/etc/fabpass/agent.toml").read_bytes() == config_before
    assert not fake.path("/etc/fabpass/agent.toml.bak").exists()
    assert "keeping" in again.stderr and "--force" in again.stderr
    second = [c[0] for c in fake.calls()[first:]]
    assert "useradd" not in second and "usermod" not in second
    assert "pip" in second  # an upgrade from the checkout
    assert fake.path("/boot/firmware/config.txt").read_text().count("dtparam=spi=on") == 1


def test_deploy_install_force_replaces_the_config_and_keeps_a_backup(fake: FakeRoot) -> None:
    fake.run(*LASER)
    old = fake.path("/etc/fabpass/agent.toml").read_text()
    fake.run("--force", "--machine-id", "cnc-1", "--induction", "cnc", "--active-high", "--relay-pin", "5")
    config = load(fake.path("/etc/fabpass/agent.toml"))
    assert (config.machine.id, config.relay.pin, config.relay.active_high) == ("cnc-1", 5, True)
    assert fake.path("/etc/fabpass/agent.toml.bak").read_text() == old


def test_deploy_install_rotates_the_broker_password_without_touching_the_config(fake: FakeRoot, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("first-password\n")
    second.write_text("second-password\n")
    fake.run(*LASER, "--broker", "mqtt://broker.lab", "--broker-password-file", str(first))
    config = fake.path("/etc/fabpass/agent.toml").read_bytes()
    fake.run("--broker-password-file", str(second))
    assert fake.path("/etc/fabpass/mqtt.password").read_text() == "second-password\n"
    assert fake.path("/etc/fabpass/agent.toml").read_bytes() == config


def test_deploy_install_uses_a_given_config_file(fake: FakeRoot, tmp_path: Path) -> None:
    given = tmp_path / "agent.toml"
    given.write_text('[machine]\nid = "printer-2"\ninduction = "3d"\n[reader]\ntype = "rdm6300"\n'
                     'port = "/dev/serial0"\n[relay]\npin = 27\nactive_high = true\n[storage]\ndir = "/var/lib/fabpass"\n')
    fake.run("--config", str(given))
    assert fake.path("/etc/fabpass/agent.toml").read_text() == given.read_text()


@pytest.mark.parametrize("args,message", [
    (("--machine-id", "laser-1", "--induction", "laser"), "--active-low or --active-high"),
    (("--induction", "laser", "--active-low"), "--machine-id"),
    (("--machine-id", "Laser 1", "--induction", "laser", "--active-low"), "must match [a-z0-9][a-z0-9-]*"),
    ((*LASER, "--broker", "mqtt://laser-1:secret@broker.lab"), "--broker-password-file"),
    ((*LASER, "--broker", "http://broker.lab"), "mqtt://host"),
    ((*LASER, "--relay-pin", "40"), "0 to 27"),
    ((*LASER, "--reader", "nfc"), "one of mfrc522"),
    ((*LASER, "--broker-password-file", "/nonexistent"), "cannot read it"),
    (("--config", "/nonexistent"), "cannot read it"),
    (("--config", str(ROOT / "pyproject.toml")), "unknown section"),
    (("--frobnicate",), "unknown option --frobnicate"),
])
def test_deploy_install_refuses_bad_input_before_changing_anything(fake: FakeRoot, args, message) -> None:
    before = fake.snapshot()
    done = fake.run(*args, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert fake.calls() == [] and fake.snapshot() == before


def test_deploy_install_writes_the_port_of_a_serial_reader(fake: FakeRoot) -> None:
    fake.run("--machine-id", "printer-1", "--induction", "3d", "--active-high", "--reader", "head",
             "--reader-port", "/dev/ttyACM0")
    config = load(fake.path("/etc/fabpass/agent.toml"))
    assert (config.reader.type, config.reader.port) == ("head", "/dev/ttyACM0")


def test_deploy_install_checks_the_mqtt_config_with_the_installed_agent(fake: FakeRoot) -> None:
    """Debian's python3 lacks paho, which the config loader needs for [mqtt]: the
    check then runs with the venv's Python, still before the config is written."""
    done = fake.run(*LASER, "--broker", "mqtt://broker.lab:99999", check=False)
    assert done.returncode == 2
    assert "mqtt.url" in done.stderr and "port" in done.stderr
    assert not fake.path("/etc/fabpass/agent.toml").exists()
