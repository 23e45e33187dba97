"""fabpass doctor: the pure checks by table, the probes on what this machine
really has (a pseudo-terminal, mock pins, a real mosquitto), and the command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from agent.cli import main
from agent.config import parse
from agent.daemon import doctor
from agent.daemon.doctor import FAIL, OK, WARN, Probes, RelaySeen, diagnose
from tests.support.helpers import free_port

LINE = re.compile(r"^(ok  |warn|fail)  (spi|reader|relay|groups|clock|broker): \S.*$")


def config_text(reader: str = "mfrc522", mqtt_url: str | None = None, extra: str = "",
                mqtt_extra: str = "", active_high: bool = False) -> str:
    if reader in ("rdm6300", "head") and "port" not in extra:
        extra += 'port = "/dev/serial0"\n'  # a serial reader needs its port
    text = (f'[machine]\nid = "laser-1"\ninduction = "laser"\n[reader]\ntype = "{reader}"\n{extra}'
            f'[relay]\npin = 17\nactive_high = {str(active_high).lower()}\n[storage]\ndir = "/var/lib/fabpass"\n')
    return text + (f'[mqtt]\nurl = "{mqtt_url}"\n{mqtt_extra}' if mqtt_url else "")


def make_config(*args, **kwargs):
    return parse(config_text(*args, **kwargs))


def write_config(tmp_path: Path, *args, **kwargs) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(config_text(*args, **kwargs))
    return path


# --- the checks, by table ---------------------------------------------------------

@pytest.mark.parametrize("reader,devices,status", [
    ("mfrc522", ["/dev/spidev0.0", "/dev/spidev0.1"], OK),
    ("mfrc522", ["/dev/spidev0.1"], FAIL),
    ("mfrc522", [], FAIL),
    ("rdm6300", [], OK),
])
def test_doctor_spi(reader, devices, status) -> None:
    assert doctor.check_spi(make_config(reader), devices).status == status


@pytest.mark.parametrize("reader,seen,status", [
    ("mfrc522", 0x92, OK),
    ("mfrc522", 0x91, OK),
    ("mfrc522", 0x00, FAIL),  # nothing on the bus
    ("mfrc522", 0xFF, FAIL),
    ("mfrc522", doctor.NO_SPIDEV, FAIL),
    ("mfrc522", "/dev/spidev0.0: Permission denied", FAIL),
    ("rdm6300", None, OK),
    ("head", "/dev/ttyACM0: could not open port", FAIL),
    ("simulated", None, OK),
])
def test_doctor_reader(reader, seen, status) -> None:
    assert doctor.check_reader(make_config(reader), seen).status == status


@pytest.mark.parametrize("seen,status", [
    (RelaySeen(held_off=True), OK),
    (RelaySeen(busy=True), WARN),
    (RelaySeen(error="BadPinFactory: no pin factory"), FAIL),
])
def test_doctor_relay(seen, status) -> None:
    assert doctor.check_relay(make_config(), seen).status == status


@pytest.mark.parametrize("reader,member_of,existing,status,named", [
    ("mfrc522", {"fabpass", "gpio", "spi"}, {"gpio", "spi", "dialout"}, OK, ""),
    ("mfrc522", {"gpio"}, {"gpio", "spi", "dialout"}, FAIL, "spi"),
    ("rdm6300", {"gpio", "spi"}, {"gpio", "spi", "dialout"}, FAIL, "dialout"),
    ("rdm6300", {"gpio", "dialout"}, {"gpio", "spi", "dialout"}, OK, ""),
    ("mfrc522", set(), {"dialout"}, FAIL, "gpio, spi"),
])
def test_doctor_groups(reader, member_of, existing, status, named) -> None:
    result = doctor.check_groups(make_config(reader), "fabpass", member_of, existing)
    assert result.status == status
    assert named in result.line()


@pytest.mark.parametrize("synchronised,status", [(True, OK), (False, FAIL), (None, WARN)])
def test_doctor_clock(synchronised, status) -> None:
    assert doctor.check_clock(synchronised, "timedatectl").status == status


def test_doctor_broker_without_mqtt_is_a_warning() -> None:
    assert doctor.check_broker(make_config(), None, "").status == WARN


def test_doctor_line_format() -> None:
    result = doctor.Result(FAIL, "spi", "missing", "turn it on")
    assert result.line() == "fail  spi: missing — turn it on"
    assert doctor.Result(OK, "clock", "synchronised").line() == "ok    clock: synchronised"


# --- the probes, on real things -------------------------------------------------------

def test_doctor_serial_probe_opens_a_real_port_and_names_a_missing_one(tmp_path: Path) -> None:
    controller, device = os.openpty()
    try:
        config = make_config("rdm6300", extra=f'port = "{os.ttyname(device)}"\n')
        assert doctor.check_reader(config, doctor.probe_reader(config)).status == OK
    finally:
        os.close(controller)
        os.close(device)
    config = make_config("rdm6300", extra=f'port = "{tmp_path}/ttyNONE"\n')
    result = doctor.check_reader(config, doctor.probe_reader(config))
    assert result.status == FAIL and "ttyNONE" in result.detail


def test_doctor_relay_probe_holds_the_pin_off_and_sees_it_busy(monkeypatch) -> None:
    pins = MockFactory()
    monkeypatch.setattr("agent.hardware.factory.pin_factory", lambda simulate: pins)
    config = make_config()  # active-low: off is high
    pins.pin(17).drive_low()  # whatever state it was left in
    assert doctor.probe_relay(config) == RelaySeen(held_off=True)
    assert pins.pin(17).state is True and pins.pin(17).function == "input"  # released after, never on
    holder = DigitalOutputDevice(17, active_high=False, pin_factory=pins)
    try:
        assert doctor.probe_relay(config) == RelaySeen(busy=True)
    finally:
        holder.close()


@pytest.mark.parametrize("active_high", [False, True])
def test_doctor_relay_probe_never_switches_the_relay_on(monkeypatch, active_high: bool) -> None:
    pins = MockFactory()
    monkeypatch.setattr("agent.hardware.factory.pin_factory", lambda simulate: pins)
    assert doctor.probe_relay(make_config(active_high=active_high)) == RelaySeen(held_off=True)
    driven = [state.state for state in pins.pin(17).states[1:]]  # after the initial, undriven state
    assert active_high not in driven  # "on" is high for an active-high board, low otherwise
    assert pins.pin(17).state is (not active_high)


def test_doctor_broker_probe_connects_to_a_real_broker(mosquitto) -> None:
    config = make_config(mqtt_url=mosquitto.url)
    result = doctor.check_broker(config, *doctor.probe_broker(config))
    assert result.status == OK and str(mosquitto.port) in result.detail


def test_doctor_broker_probe_fails_on_a_closed_port() -> None:
    config = make_config(mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
    result = doctor.check_broker(config, *doctor.probe_broker(config))
    assert result.status == FAIL and "refused" in result.detail.lower()


def test_doctor_broker_probe_uses_the_configured_credentials(mosquitto_factory, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "laser-1", "right-password"], check=True)
    broker = mosquitto_factory(f"password_file {passwd}\n", anonymous=False)
    secret = tmp_path / "mqtt.password"
    for password, status in (("right-password", OK), ("wrong-password", FAIL)):
        secret.write_text(password + "\n")
        config = make_config(mqtt_url=broker.url,
                             mqtt_extra=f'username = "laser-1"\npassword_file = "{secret}"\n')
        result = doctor.check_broker(config, *doctor.probe_broker(config))
        assert result.status == status, result.line()
    assert "check [mqtt] username and password_file" in result.fix


# --- the command ----------------------------------------------------------------------

def test_doctor_prints_one_line_per_check_and_exits_by_the_worst(tmp_path: Path, mosquitto) -> None:
    path = write_config(tmp_path, mqtt_url=mosquitto.url)
    done = subprocess.run([sys.executable, "-m", "agent", "doctor", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = done.stdout.splitlines()
    assert [LINE.match(line).group(2) for line in lines] == ["spi", "reader", "relay", "groups", "clock", "broker"]
    assert lines[-1].startswith("ok    broker:")
    assert done.returncode == (1 if any(line.startswith("fail") for line in lines) else 0)


def test_doctor_json_and_exit_status_follow_the_checks(tmp_path: Path) -> None:
    path = write_config(tmp_path, mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
    runner = CliRunner()
    done = runner.invoke(main, ["doctor", "--config", str(path), "--json"])
    report = json.loads(done.output)
    assert done.exit_code == 1 and report["ok"] is False
    assert {"status": FAIL, "check": "broker"}.items() <= report["checks"][-1].items()

    healthy = Probes(spidevs=lambda: ["/dev/spidev0.0"], reader=lambda c: 0x92,
                     relay=lambda c: RelaySeen(held_off=True), user_groups=lambda: ("fabpass", {"gpio", "spi"}, {"gpio", "spi"}),
                     clock=lambda: (True, "timedatectl"), broker=lambda c: (None, "mqtt://127.0.0.1:1883"))
    assert all(r.status == OK for r in diagnose(make_config(mqtt_url="mqtt://127.0.0.1"), healthy))


def test_doctor_refuses_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[machine]\n")
    done = CliRunner().invoke(main, ["doctor", "--config", str(path)])
    assert done.exit_code == 2 and "[reader]: missing section" in done.output
