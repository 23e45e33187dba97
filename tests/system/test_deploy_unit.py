"""deploy/fabpass.service (checked by systemd-analyze verify) and deploy/relay-off."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

UNIT = ROOT / "deploy" / "fabpass.service"
RELAY_OFF = ROOT / "deploy" / "relay-off"
INSTALLED_PROGRAMS = ("/opt/fabpass/bin/fabpass", "/opt/fabpass/libexec/relay-off")


def settings(text: str) -> dict[str, list[str]]:
    """A unit file's [Service] and [Unit] settings: key -> every value it is given."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify on a copy of the unit whose programs exist.

    verify fails on an ExecStart= that is not executable, and /opt/fabpass is
    not installed on the machine running the tests: the copy points to stubs
    in tmp_path instead. Everything else is verified as written.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: scripts/test installs Debian's systemd package")
    for program in INSTALLED_PROGRAMS:
        stub = tmp_path / program.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        unit_text = unit_text.replace(program, str(stub))
    copy = tmp_path / "fabpass.service"
    copy.write_text(unit_text)
    return subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)


def test_deploy_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    done = verify(UNIT.read_text(), tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


def test_deploy_unit_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: verify speaks up about a misspelt key or value."""
    broken = UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs=").replace("ProtectSystem=strict", "ProtectSystem=tight")
    done = verify(broken, tmp_path)
    assert "WatchdogSecs" in done.stderr and "tight" in done.stderr


def test_deploy_unit_runs_the_agent_as_the_contract_says() -> None:
    unit = settings(UNIT.read_text())
    expected = {
        "Type": ["notify"],
        "Restart": ["always"],
        "User": ["fabpass"],
        "StateDirectory": ["fabpass"],
        "ConfigurationDirectory": ["fabpass"],
        "WorkingDirectory": ["/var/lib/fabpass"],
        "ExecStart": ["/opt/fabpass/bin/fabpass run --config /etc/fabpass/agent.toml"],
        "ExecStopPost": ["+/opt/fabpass/libexec/relay-off /etc/fabpass/agent.toml"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "NoNewPrivileges": ["yes"],
    }
    assert {key: unit.get(key) for key in expected} == expected
    assert unit["WatchdogSec"] and unit["WatchdogSec"][0] != "0"


def test_deploy_unit_keeps_gpio_spi_and_serial_reachable() -> None:
    unit = settings(UNIT.read_text())
    assert unit.get("PrivateDevices", ["no"]) == ["no"]
    allowed = {value.split()[0] for value in unit["DeviceAllow"]}
    assert {"char-gpiochip", "char-spi", "char-ttyAMA", "char-ttyS", "char-ttyUSB", "char-ttyACM"} <= allowed
    assert "ProcSubset" not in unit  # gpiozero reads /proc/cpuinfo


# relay-off, with stubs of the GPIO tools on a PATH that holds nothing else.

@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A PATH directory with bash and the stubs each test adds; the calls go to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    return bin_dir


def stub(bin_dir: Path, name: str, output: str = "") -> None:
    path = bin_dir / name
    path.write_text(f'#!{shutil.which("bash")}\necho "{name} $*" >>"{bin_dir.parent}/calls.log"\n'
                    + (f'echo "{output}"\n' if output else ""))
    path.chmod(0o755)


def relay_off(bin_dir: Path, config_text: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    config = bin_dir.parent / "agent.toml"
    config.write_text(config_text)
    env = {"PATH": str(bin_dir), "FABPASS_PYTHON": sys.executable}
    done = subprocess.run([shutil.which("bash"), str(RELAY_OFF), str(config)],
                          env=env, capture_output=True, text=True, timeout=30)
    log = bin_dir.parent / "calls.log"
    return done, log.read_text().splitlines() if log.exists() else []


def config(pin: int, active_high: bool) -> str:
    return (f'[machine]\nid = "laser-1"\ninduction = "laser"\n[reader]\ntype = "mfrc522"\n'
            f'[relay]\npin = {pin}\nactive_high = {str(active_high).lower()}\n[storage]\ndir = "/var/lib/fabpass"\n')


@pytest.mark.parametrize("active_high,level", [(False, "dh"), (True, "dl")])
def test_deploy_relay_off_drives_the_pin_to_its_off_level_with_pinctrl(tools: Path, active_high, level) -> None:
    stub(tools, "pinctrl")
    stub(tools, "gpioset")
    done, calls = relay_off(tools, config(22, active_high))
    assert done.returncode == 0, done.stderr
    assert calls == [f"pinctrl set 22 op {level}"]


@pytest.mark.parametrize("active_high,value", [(False, "1"), (True, "0")])
def test_deploy_relay_off_falls_back_to_gpioset(tools: Path, active_high, value) -> None:
    stub(tools, "gpiofind", output="gpiochip4 17")
    stub(tools, "gpioset")
    done, calls = relay_off(tools, config(17, active_high))
    assert done.returncode == 0, done.stderr
    assert calls == ["gpiofind GPIO17", f"gpioset --mode=exit gpiochip4 17={value}"]


def test_deploy_relay_off_fails_loudly_without_a_gpio_tool(tools: Path) -> None:
    done, calls = relay_off(tools, config(17, False))
    assert done.returncode == 1
    assert "neither pinctrl" in done.stderr and "pin 17" in done.stderr


@pytest.mark.parametrize("text", ["not toml [", config(17, False).replace("false", '"no"'), "[machine]\n"])
def test_deploy_relay_off_fails_loudly_on_a_config_it_cannot_read(tools: Path, text: str) -> None:
    stub(tools, "pinctrl")
    done, calls = relay_off(tools, text)
    assert done.returncode == 1
    assert "cannot read [relay]" in done.stderr
    assert calls == []


def test_deploy_relay_off_reads_the_config_install_writes(tools: Path) -> None:
    template = (ROOT / "deploy" / "agent.toml.template").read_text()
    for placeholder, value in {"@MACHINE_ID@": "laser-1", "@MACHINE_NAME@": "Laser", "@INDUCTION@": "laser",
                               "@READER@": "mfrc522", "@READER_PORT@": "", "@RELAY_PIN@": "26", "@ACTIVE_HIGH@": "false"}.items():
        template = template.replace(placeholder, value)
    stub(tools, "pinctrl")
    done, calls = relay_off(tools, template)
    assert done.returncode == 0, done.stderr
    assert calls == ["pinctrl set 26 op dh"]



def test_deploy_logbook_unit_passes_verify_and_restarts_whatever_the_exit(tmp_path: Path) -> None:
    """deploy/fabpass-logbook.service: the collector exits 1 when its database fails, and
    must come back to take what the broker kept for it."""
    text = (ROOT / "deploy" / "fabpass-logbook.service").read_text()
    done = verify(text, tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    unit = settings(text)
    assert unit["Restart"] == ["always"] and unit["StartLimitIntervalSec"] == ["0"]
    assert unit["ExecStart"][0].startswith("/opt/fabpass/bin/fabpass logbook run ")
