"""deploy/fabpass.service (checked by systemd-analyze verify) and deploy/relay-off."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

UNIT = ROOT / "deploy" / "fabpass.service"
REFRESH_SERVICE = ROOT / "deploy" / "fabpass-refresh.service"
REFRESH_TIMER = ROOT / "deploy" / "fabpass-refresh.timer"
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


def verify(unit_text: str, tmp_path: Path, others: dict[str, str] | None = None,
           name: str = "fabpass.service") -> subprocess.CompletedProcess:
    """systemd-analyze verify on a copy of the unit whose programs exist, beside
    copies of `others` (name -> text: the service a timer starts, say).

    verify fails on an ExecStart= that is not executable, and /opt/fabpass is
    not installed on the machine running the tests: the copies point to stubs
    in tmp_path instead. Everything else is verified as written.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: scripts/test installs Debian's systemd package")
    units = {name: unit_text, **(others or {})}
    for program in INSTALLED_PROGRAMS:
        stub = tmp_path / program.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        units = {unit: text.replace(program, str(stub)) for unit, text in units.items()}
    for unit, text in units.items():
        (tmp_path / unit).write_text(text)
    return subprocess.run([analyze, "verify", "--man=no", str(tmp_path / name)], capture_output=True, text=True,
                          timeout=60)


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



# --- the unit must not blind the agent's clock check (issue 17, finding 1) -------------------------

def allowed_syscalls(values: list[str]) -> set[str]:
    """What SystemCallFilter= lines allow, with their @sets expanded by systemd-analyze."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/test installs Debian's systemd package"
    allowed: set[str] = set()
    for value in values:
        deny = value.startswith("~")
        for name in value.lstrip("~").split():
            names = {name}
            if name.startswith("@"):
                listing = subprocess.run([analyze, "syscall-filter", name], capture_output=True, text=True,
                                         timeout=60, check=True).stdout
                names = {line.strip() for line in listing.splitlines()[1:]
                         if line.strip() and not line.strip().startswith("#")}
                names = set().union(*(allowed_syscalls([n]) if n.startswith("@") else {n} for n in names))
            allowed = allowed - names if deny else allowed | names
    return allowed


def test_deploy_unit_lets_the_agent_read_whether_the_clock_is_synchronised() -> None:
    """ProtectClock=yes, or a SystemCallFilter without clock_adjtime, makes the agent's
    read-only adjtimex fail with EPERM (systemd#26413): the agent then refuses every
    dated member for ever. glibc's adjtimex is the clock_adjtime syscall (clock_adjtime64
    on 32-bit Raspberry Pi OS); without CAP_SYS_TIME it can only read."""
    unit = settings(UNIT.read_text())
    assert unit.get("ProtectClock", ["no"]) == ["no"]
    allowed = allowed_syscalls(unit["SystemCallFilter"])
    assert {"adjtimex", "clock_adjtime", "clock_adjtime64"} <= allowed
    assert not {"settimeofday", "clock_settime", "clock_settime64"} & allowed, "reading, not setting"
    assert unit["CapabilityBoundingSet"] == [""], "no CAP_SYS_TIME: the clock cannot be changed"


def test_deploy_unit_syscall_check_sees_a_filter_that_hides_the_clock() -> None:
    """The check above can fail: @system-service alone does not allow clock_adjtime."""
    assert "clock_adjtime" not in allowed_syscalls(["@system-service"])
    assert "clock_adjtime" in allowed_syscalls(["@system-service clock_adjtime"])
    assert "clock_adjtime" not in allowed_syscalls(["@system-service @clock", "~@clock"])


# --- the lab side's daily refresh (issue 17) ---------------------------------------------------------

def test_deploy_refresh_timer_and_service_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    service = {"fabpass-refresh.service": REFRESH_SERVICE.read_text()}
    done = verify(REFRESH_TIMER.read_text(), tmp_path, service, name="fabpass-refresh.timer")
    assert (done.returncode, done.stderr) == (0, "")
    done = verify(REFRESH_SERVICE.read_text(), tmp_path / "service", name="fabpass-refresh.service")
    assert (done.returncode, done.stderr) == (0, "")


def test_deploy_refresh_timer_verify_reports_a_broken_timer_and_its_service(tmp_path: Path) -> None:
    """The check above can fail: verifying the timer reads the service beside it too."""
    service = {"fabpass-refresh.service": REFRESH_SERVICE.read_text().replace("Type=oneshot", "Type=oneshott")}
    done = verify(REFRESH_TIMER.read_text().replace("=daily", "=dayly"), tmp_path, service,
                  name="fabpass-refresh.timer")
    assert done.returncode != 0 and "dayly" in done.stderr and "oneshott" in done.stderr


def test_deploy_refresh_runs_members_refresh_daily_with_its_secrets_as_credentials() -> None:
    timer, service = settings(REFRESH_TIMER.read_text()), settings(REFRESH_SERVICE.read_text())
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]
    assert service["Type"] == ["oneshot"] and service["DynamicUser"] == ["yes"]
    command = service["ExecStart"][0].split()
    assert command[:3] == ["/opt/fabpass/bin/fabpass", "members", "refresh"]
    assert "--password-file" in command and "--sign-key" in command, "no secret on the command line"
    assert sorted(c.split(":")[0] for c in service["LoadCredential"]) == ["mqtt-password", "signing.key"]


def test_deploy_logbook_unit_passes_verify_and_restarts_whatever_the_exit(tmp_path: Path) -> None:
    """deploy/fabpass-logbook.service: the collector exits 1 when its database fails, and
    must come back to take what the broker kept for it."""
    text = (ROOT / "deploy" / "fabpass-logbook.service").read_text()
    done = verify(text, tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    unit = settings(text)
    assert unit["Restart"] == ["always"] and unit["StartLimitIntervalSec"] == ["0"]
    assert unit["ExecStart"][0].startswith("/opt/fabpass/bin/fabpass logbook run ")
