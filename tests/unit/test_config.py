"""agent.config: TOML into frozen dataclasses; every problem a ConfigError naming the file and key."""

from __future__ import annotations

import dataclasses
import zoneinfo
from pathlib import Path

import pytest

from agent import config as cfg
from agent.config import ConfigError
from agent.core.hours import OpeningHours
from tests.support import ROOT as REPO

MINIMAL = {
    "machine": {"id": '"laser-1"', "induction": '"laser"'},
    "reader": {"type": '"simulated"'},
    "relay": {"pin": "17", "active_high": "false"},
    "storage": {"dir": '"/var/lib/fabpass"'},
}


def render(sections: dict[str, dict[str, str]]) -> str:
    out = []
    for name, table in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{key} = {value}" for key, value in table.items())
        out.append("")
    return "\n".join(out)


def with_(section: str, key: str, value: str | None) -> str:
    """The minimal config with one key set (value None: removed)."""
    sections = {name: dict(table) for name, table in MINIMAL.items()}
    table = sections.setdefault(section, {})
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value
    return render(sections)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


# --- good configs ------------------------------------------------------------------------------


def test_config_minimal_has_defaults(tmp_path):
    c = cfg.load(write(tmp_path, render(MINIMAL)))
    assert c.machine.id == "laser-1" and c.machine.induction == "laser" and c.machine.name == ""
    assert c.machine.max_session is None and c.machine.warn_before == 300.0 and c.machine.hard_limit is None
    assert c.machine.timezone is None and c.machine.hours is None and c.tz is None
    assert c.reader.type == "simulated" and c.reader.rearm == 0.5
    assert c.relay.pin == 17 and c.relay.active_high is False
    assert c.relay.min_off == 0.0 and c.relay.run_on == 0.0
    assert c.storage.dir == Path("/var/lib/fabpass")
    assert c.mqtt is None
    assert c.sensor.pin is None and c.sensor.idle_timeout is None
    assert c.indicators.green is None
    assert c.machine.induction_valid is None and c.report.pin is None and c.report.hold == 2.0
    assert c.bypass.pin is None
    assert c.members.public_key is None and c.members.max_list_age is None
    assert c.hardware.simulate is False
    assert c.path == tmp_path / "agent.toml"


@pytest.mark.parametrize("name", ["laser-cutter.toml", "cnc-router.toml", "3d-printer.toml"])
def test_config_shipped_examples_load(name):
    c = cfg.load(REPO / "config" / name)
    assert c.machine.id and c.machine.induction


def test_config_full(tmp_path):
    text = render({
        "machine": {"id": '"cnc-2"', "induction": '"cnc"', "name": '"Router"', "max_session": '"4h"',
                    "warn_before": '"5m"', "hard_limit": '"6h"', "timezone": '"Europe/Rome"',
                    "hours": '["mon-fri 09:00-19:00", "sat 10:00-14:00"]'},
        "reader": {"type": '"rdm6300"', "port": '"/dev/serial0"', "rearm": '"250ms"'},
        "relay": {"pin": "27", "active_high": "true", "min_off": '"30s"', "run_on": "90"},
        "indicators": {"green": "5", "red": "6", "amber": "13", "buzzer": "19", "heartbeat": "0"},
        "sensor": {"pin": "22", "idle_timeout": '"1h30m"'},
        "mqtt": {"url": '"mqtts://broker.lab:8883"', "topic_prefix": '"lab"', "keepalive": "20"},
        "members": {"max_list_age": '"7d"'},
        "storage": {"dir": '"/tmp/fp"'},
        "hardware": {"simulate": "true"},
    })
    c = cfg.load(write(tmp_path, text))
    assert c.machine.max_session == 14400.0 and c.machine.warn_before == 300.0 and c.machine.hard_limit == 21600.0
    assert c.tz == zoneinfo.ZoneInfo("Europe/Rome")
    assert c.machine.hours == OpeningHours.parse(["mon-fri 09:00-19:00", "sat 10:00-14:00"])
    assert c.reader.rearm == 0.25 and c.reader.port == "/dev/serial0"
    assert c.relay.min_off == 30.0 and c.relay.run_on == 90.0 and c.relay.active_high is True
    assert c.indicators.heartbeat == 0
    assert c.sensor.idle_timeout == 5400.0
    assert c.mqtt.url == "mqtts://broker.lab:8883" and c.mqtt.keepalive == 20 and c.mqtt.outbox_limit == 100_000
    assert c.members.max_list_age == 7 * 86400.0
    assert c.simulate


def test_config_is_frozen(tmp_path):
    c = cfg.load(write(tmp_path, render(MINIMAL)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.relay.pin = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.machine = None  # type: ignore[misc]


def test_config_load_simulate_flag(tmp_path):
    path = write(tmp_path, render(MINIMAL))
    assert cfg.load(path, simulate=True).hardware.simulate
    assert not cfg.load(path).hardware.simulate


@pytest.mark.parametrize("env, expected", [("", False), ("0", False), ("1", True), ("yes", True)])
def test_config_simulate_from_environment(tmp_path, monkeypatch, env, expected):
    monkeypatch.setenv("FABPASS_SIMULATE", env)
    assert cfg.load(write(tmp_path, render(MINIMAL))).simulate is expected


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("machine", "id", '"a"', "a"),
        ("machine", "id", '"0-laser-2"', "0-laser-2"),
        ("relay", "pin", "0", 0),
        ("relay", "pin", "27", 27),
        ("machine", "max_session", "3600", 3600.0),
        ("machine", "max_session", "400.5", 400.5),
        ("machine", "max_session", '"1h 30m"', 5400.0),
        ("relay", "min_off", '"0s"', 0.0),
        ("machine", "hours", '["mon-sun 00:00-24:00"]', OpeningHours.parse(["mon-sun 00:00-24:00"])),
        ("reader", "type", '"mfrc522"', "mfrc522"),
        ("reader", "port", '"/dev/ttyACM0"', "/dev/ttyACM0"),
        ("machine", "induction_valid", '"365d"', 365 * 86400.0),
        ("report", "pin", "22", 22),
        ("report", "hold", '"0.5s"', 0.5),
        ("bypass", "pin", "23", 23),
    ],
)
def test_config_accepts(tmp_path, section, key, value, expected):
    c = cfg.load(write(tmp_path, with_(section, key, value)))
    assert getattr(getattr(c, section), key) == expected


# --- errors: each names the file and the key ----------------------------------------------------


@pytest.mark.parametrize("section, key", [
    ("machine", "id"), ("machine", "induction"), ("reader", "type"),
    ("relay", "pin"), ("relay", "active_high"), ("storage", "dir"),
])
def test_config_missing_required_key(tmp_path, section, key):
    message = load_error(tmp_path, with_(section, key, None))
    assert f"{section}.{key}" in message and "missing" in message


@pytest.mark.parametrize("section", ["machine", "reader", "relay", "storage"])
def test_config_missing_required_section(tmp_path, section):
    sections = {name: table for name, table in MINIMAL.items() if name != section}
    message = load_error(tmp_path, render(sections))
    assert f"[{section}]" in message and "missing" in message


@pytest.mark.parametrize("tables, key", [
    ({"reader": {"type": '"head"'}}, "reader.port"),
    ({"sensor": {"idle_timeout": '"10m"'}}, "sensor.idle_timeout"),
    ({"indicators": {"green": "17"}}, "indicators.green"),
    ({"mqtt": {"url": '"mqtt://h"', "keepalive": "60"}}, "mqtt.keepalive"),
    ({"mqtt": {"url": '"mqtt://h"', "outbox_limit": "0"}}, "mqtt.outbox_limit"),
    ({"mqtt": {"url": '"mqtt://h"', "topic_prefix": '"lab/#"'}}, "mqtt.topic_prefix"),
    ({"mqtt": {"url": '"http://h"'}}, "mqtt.url"),
    ({"members": {"public_key": '"not base64!"'}}, "members.public_key"),
    ({"storage": {"dir": '""'}}, "storage.dir"),
    ({"report": {"pin": "17"}}, "report.pin"),
    ({"bypass": {"pin": "17"}}, "bypass.pin"),
    ({"report": {"pin": "22"}, "bypass": {"pin": "22"}}, "bypass.pin"),
    ({"report": {"hold": '"50ms"'}}, "report.hold"),
])
def test_config_keys_that_depend_on_each_other(tmp_path, tables, key):
    sections = {name: dict(table) for name, table in MINIMAL.items()}
    for name, table in tables.items():
        sections.setdefault(name, {}).update(table)
    assert key in load_error(tmp_path, render(sections))


def test_config_mqtt_section_needs_url(tmp_path):
    message = load_error(tmp_path, with_("mqtt", "topic_prefix", '"fabpass"'))
    assert "mqtt.url" in message


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("machine", "colour", '"red"'),
        ("relay", "pins", "17"),
        ("reader", "baud", "9600"),
        ("mqtt", "password", '"hunter2"'),  # a password never sits in the config, and the key is unknown
    ],
)
def test_config_unknown_key(tmp_path, section, key, value):
    text = with_(section, key, value)
    if section == "mqtt":
        text = with_("mqtt", "url", '"mqtt://x"').replace("[mqtt]", f"[mqtt]\n{key} = {value}")
    message = load_error(tmp_path, text)
    assert f"{section}.{key}" in message and "unknown key" in message


def test_config_unknown_section(tmp_path):
    message = load_error(tmp_path, render(MINIMAL) + "\n[lasers]\npower = 40\n")
    assert "[lasers]" in message and "unknown section" in message


def test_config_section_not_a_table(tmp_path):
    text = 'hardware = 5\n' + render(MINIMAL)
    message = load_error(tmp_path, text)
    assert "hardware" in message and "table" in message


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("relay", "pin", '"17"'),
        ("relay", "pin", "17.0"),
        ("relay", "pin", "true"),
        ("relay", "active_high", '"false"'),
        ("relay", "active_high", "0"),
        ("machine", "id", "5"),
        ("machine", "induction", "true"),
        ("machine", "name", "[]"),
        ("reader", "type", "1"),
        ("reader", "port", "0"),
        ("reader", "bus", '"0"'),
        ("storage", "dir", "5"),
        ("machine", "hours", '"mon-fri 09:00-19:00"'),
        ("machine", "timezone", "1"),
        ("indicators", "green", '"5"'),
        ("hardware", "simulate", '"yes"'),
    ],
)
def test_config_wrong_type(tmp_path, section, key, value):
    message = load_error(tmp_path, with_(section, key, value))
    assert f"{section}.{key}" in message and "expected" in message


@pytest.mark.parametrize(
    "section, key, value",
    [
        # durations
        ("machine", "max_session", '"4 hours"'),
        ("machine", "max_session", '"-1h"'),
        ("machine", "max_session", '"4"'),
        ("machine", "max_session", '""'),
        ("machine", "max_session", "true"),
        ("machine", "max_session", "[]"),
        ("relay", "min_off", "-1"),
        ("relay", "run_on", '"1x"'),
        ("reader", "rearm", '"soon"'),
        ("sensor", "idle_timeout", '"h"'),
        # pins
        ("relay", "pin", "28"),
        ("relay", "pin", "-1"),
        ("indicators", "green", "40"),
        ("reader", "reset_pin", "100"),
        ("sensor", "pin", "-3"),
        # time zones
        ("machine", "timezone", '"Mars/Olympus_Mons"'),
        ("machine", "timezone", '""'),
        ("machine", "timezone", '"/etc/localtime"'),
        # machine ids
        ("machine", "id", '"Laser-1"'),
        ("machine", "id", '"-laser"'),
        ("machine", "id", '"laser_1"'),
        ("machine", "id", '"laser 1"'),
        ("machine", "id", '"laser/1"'),
        ("machine", "id", '"laser+"'),
        ("machine", "id", '""'),
        # opening hours
        ("machine", "hours", "[]"),
        ("machine", "hours", '["mon 19:00-09:00"]'),
        ("machine", "hours", '["mon 09:00-09:00"]'),
        ("machine", "hours", '["xyz 09:00-10:00"]'),
        ("machine", "hours", '["mon 25:00-26:00"]'),
        ("machine", "hours", '["mon 09:00-19:60"]'),
        ("machine", "hours", '["monday 9-5"]'),
        ("machine", "hours", "[5]"),
        # reader types
        ("reader", "type", '"usb"'),
        ("reader", "type", '"Simulated"'),
    ],
)
def test_config_bad_value(tmp_path, section, key, value):
    message = load_error(tmp_path, with_(section, key, value))
    assert f"{section}.{key}" in message


def test_config_warn_before_must_be_shorter_than_max_session(tmp_path):
    text = with_("machine", "max_session", '"5m"').replace('[machine]', '[machine]\nwarn_before = "5m"')
    message = load_error(tmp_path, text)
    assert "machine.warn_before" in message and "max_session" in message


def test_config_not_toml(tmp_path):
    message = load_error(tmp_path, "[machine\nid = ")
    assert "not valid TOML" in message


def test_config_duplicate_key_is_not_toml(tmp_path):
    message = load_error(tmp_path, render(MINIMAL).replace("pin = 17", "pin = 17\npin = 18"))
    assert "TOML" in message


def test_config_unreadable_file_names_it(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    assert str(path) in str(info.value) and "cannot read" in str(info.value)


def test_config_not_utf8_is_a_config_error(tmp_path):
    # A comment saved as Latin-1 ("café"): load() catches only OSError around read_text,
    # so the UnicodeDecodeError escapes instead of a ConfigError naming the file.
    path = tmp_path / "agent.toml"
    path.write_bytes(render(MINIMAL).encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    assert str(path) in str(info.value)


def test_config_parse_without_a_file_names_the_placeholder():
    with pytest.raises(ConfigError, match="<config>: machine.id"):
        cfg.parse(with_("machine", "id", '"BAD"'))


# --- gaps found while writing these tests (see the report) -----------------------------------


@pytest.mark.parametrize("value", ['"Europe"'])
def test_config_timezone_directory_is_a_config_error(tmp_path, value):
    # zoneinfo raises IsADirectoryError for "Europe" (and OSError for a 300-character name),
    # not ValueError; _check_timezone catches only ZoneInfoNotFoundError and ValueError.
    message = load_error(tmp_path, with_("machine", "timezone", value))
    assert "machine.timezone" in message


def test_config_nan_duration_is_a_config_error(tmp_path):
    # TOML has nan; parse_duration returns it unchanged (nan < 0 is False), the
    # warn_before check passes (300 >= nan is False), and a NaN deadline never expires.
    message = load_error(tmp_path, with_("machine", "max_session", "nan"))
    assert "machine.max_session" in message


@pytest.mark.parametrize("value", ["0"])
def test_config_mqtt_keepalive_must_be_positive(tmp_path, value):
    # keepalive 0 turns MQTT keepalive off, so the will is never published for a vanished
    # agent (the contract wants it within about 45 s); -5 is accepted too and fails at connect.
    text = with_("mqtt", "url", '"mqtt://localhost"').replace("[mqtt]", f"[mqtt]\nkeepalive = {value}")
    message = load_error(tmp_path, text)
    assert "mqtt.keepalive" in message


# --- secure cards ------------------------------------------------------------------------------

SECURE = {"type": '"mfrc522"', "secure": '"ntag424"', "card_key_file": '"/etc/fabpass/card.key"'}


def test_config_secure_cards(tmp_path):
    reader = cfg.load(write(tmp_path, render({**MINIMAL, "reader": SECURE}))).reader
    assert (reader.secure, reader.card_key_file, reader.card_key_no) == ("ntag424", "/etc/fabpass/card.key", 2)
    reader = cfg.load(write(tmp_path, render({**MINIMAL, "reader": {**SECURE, "card_key_no": "0"}}))).reader
    assert reader.card_key_no == 0
    assert cfg.load(write(tmp_path, render(MINIMAL))).reader.secure is None  # off unless asked for


@pytest.mark.parametrize("reader, message", [
    ({**SECURE, "secure": '"desfire"'}, "reader.secure: 'desfire' is not a secure card this fabpass reads (ntag424)"),
    ({**SECURE, "type": '"simulated"'}, "reader.secure: needs an mfrc522 reader"),
    ({**SECURE, "type": '"rdm6300"', "port": '"/dev/serial0"'}, "reader.secure: needs an mfrc522 reader"),
    ({"type": '"mfrc522"', "secure": '"ntag424"'}, "reader.card_key_file: required with reader.secure"),
    ({**SECURE, "card_key_no": "5"}, "reader.card_key_no: 5 is not an NTAG 424 DNA key number (0-4)"),
    ({**SECURE, "card_key_no": "-1"}, "reader.card_key_no: -1 is not"),
    ({"type": '"mfrc522"', "card_key_file": '"/k"'}, "reader.card_key_file: used only with reader.secure"),
    ({**SECURE, "card_key_file": '""'}, "reader.card_key_file: must name a file"),
])
def test_config_secure_cards_checks(tmp_path, reader, message):
    assert message in load_error(tmp_path, render({**MINIMAL, "reader": reader}))


def test_config_secure_cards_wrong_types(tmp_path):
    assert "reader.card_key_no: expected an integer" in load_error(
        tmp_path, render({**MINIMAL, "reader": {**SECURE, "card_key_no": '"2"'}}))
    assert "reader.secure: expected a string" in load_error(
        tmp_path, render({**MINIMAL, "reader": {**SECURE, "secure": "true"}}))
