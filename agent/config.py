"""The machine config: one TOML file per machine, read into frozen dataclasses.

Every problem is a ConfigError whose message names the file, the key and what
is wrong; unknown keys and wrong types are errors, never surprises later.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core.hours import OpeningHours
from agent.core.model import MACHINE_ID_RULE, is_machine_id
from agent.core.timespec import parse_duration

READER_TYPES = ("simulated", "mfrc522", "rdm6300", "head")
REQUIRED = object()


class ConfigError(ValueError):
    """A config file that cannot be used; the message is for a person."""


def _opt(default: Any = REQUIRED, kind: str | None = None, doc: str = "") -> Any:
    """A config field. `kind` names a parser beyond the Python type (`duration`, `pin`…)."""
    meta = {"kind": kind, "doc": doc, "required": default is REQUIRED}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class MachineConfig:
    id: str = _opt(kind="machine_id")
    induction: str = _opt()
    name: str = _opt("")
    max_session: float | None = _opt(None, "duration", "a session ends (timeout) after this long")
    warn_before: float = _opt(300.0, "duration", "warn this long before max_session ends it")
    hard_limit: float | None = _opt(None, "duration", "ends a session even while the machine runs")
    timezone: str | None = _opt(None, "timezone")
    hours: OpeningHours | None = _opt(None, "hours", "opening hours, e.g. ['mon-fri 09:00-19:00']")


@dataclass(frozen=True)
class ReaderConfig:
    type: str = _opt(kind="reader_type")
    port: str | None = _opt(None)
    baudrate: int = _opt(9600)
    bus: int = _opt(0)
    device: int = _opt(0)
    reset_pin: int = _opt(25, "pin")
    rearm: float = _opt(0.5, "duration", "a card counts as a new tap after this long away")
    poll_interval: float = _opt(0.1, "duration", "how often an MFRC522 is polled for a card")


@dataclass(frozen=True)
class RelayConfig:
    pin: int = _opt(kind="pin")
    active_high: bool = _opt()
    min_off: float = _opt(0.0, "duration", "shortest time off between two sessions")
    run_on: float = _opt(0.0, "duration", "the relay stays on this long after a session ends")


@dataclass(frozen=True)
class IndicatorConfig:
    green: int | None = _opt(None, "pin")
    red: int | None = _opt(None, "pin")
    amber: int | None = _opt(None, "pin")
    buzzer: int | None = _opt(None, "pin")
    active_high: bool = _opt(True)
    # A pin that toggles while the agent is healthy, for a hardware watchdog.
    heartbeat: int | None = _opt(None, "pin")


@dataclass(frozen=True)
class SensorConfig:
    """A machine-running input: a current sensor or the machine's busy signal."""

    pin: int | None = _opt(None, "pin")
    active_high: bool = _opt(True)
    idle_timeout: float | None = _opt(None, "duration", "a session ends after the machine idles this long")


@dataclass(frozen=True)
class MqttConfig:
    url: str = _opt()
    topic_prefix: str = _opt("fabpass")
    username: str | None = _opt(None)
    password_file: str | None = _opt(None)
    ca_file: str | None = _opt(None)
    cert_file: str | None = _opt(None)
    key_file: str | None = _opt(None)
    keepalive: int = _opt(30)
    outbox_limit: int = _opt(100_000)


@dataclass(frozen=True)
class MembersConfig:
    public_key: str | None = _opt(None)
    max_list_age: float | None = _opt(None, "duration", "refuse non-staff when the list is older")
    badge_hash_key_file: str | None = _opt(None)


@dataclass(frozen=True)
class StorageConfig:
    dir: Path = _opt(kind="path")


@dataclass(frozen=True)
class HardwareConfig:
    simulate: bool = _opt(False)


@dataclass(frozen=True)
class Config:
    machine: MachineConfig
    reader: ReaderConfig
    relay: RelayConfig
    storage: StorageConfig
    indicators: IndicatorConfig = field(default_factory=IndicatorConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    mqtt: MqttConfig | None = None
    members: MembersConfig = field(default_factory=MembersConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    path: Path | None = None

    @property
    def tz(self) -> zoneinfo.ZoneInfo | None:
        return zoneinfo.ZoneInfo(self.machine.timezone) if self.machine.timezone else None

    @property
    def simulate(self) -> bool:
        return self.hardware.simulate or os.environ.get("FABPASS_SIMULATE", "") not in ("", "0")


SECTIONS: dict[str, type] = {
    "machine": MachineConfig,
    "reader": ReaderConfig,
    "relay": RelayConfig,
    "storage": StorageConfig,
    "indicators": IndicatorConfig,
    "sensor": SensorConfig,
    "mqtt": MqttConfig,
    "members": MembersConfig,
    "hardware": HardwareConfig,
}
REQUIRED_SECTIONS = ("machine", "reader", "relay", "storage")


def _check_machine_id(value: str) -> str:
    if not is_machine_id(value):
        raise ValueError(f"{value!r} must match {MACHINE_ID_RULE} (it is used in MQTT topics)")
    return value


def _check_pin(value: int) -> int:
    if not 0 <= value <= 27:
        raise ValueError(f"{value} is not a BCM GPIO number (0-27)")
    return value


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{value!r} is not a known time zone (e.g. 'Europe/Rome')") from None
    return value


def _check_reader(value: str) -> str:
    if value not in READER_TYPES:
        raise ValueError(f"{value!r} is not a reader type; use one of {', '.join(READER_TYPES)}")
    return value


_PARSERS = {
    "duration": parse_duration,
    "machine_id": _check_machine_id,
    "pin": _check_pin,
    "timezone": _check_timezone,
    "reader_type": _check_reader,
    "path": Path,
    "hours": OpeningHours.parse,
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}


def _base_type(annotation: str) -> type:
    first = annotation.split("|")[0].strip()
    return {"str": str, "int": int, "bool": bool, "float": float, "Path": str,
            "OpeningHours": list}[first]


def _section(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ([{where.rsplit(': ', 1)[-1]}])")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{where}.{key}: unknown key (this section takes {known})")
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in table:
            if f.metadata["required"]:
                raise ConfigError(f"{key}: missing (it is required)")
            continue
        raw = table[name]
        kind = f.metadata["kind"]
        if kind != "duration":
            expected = _base_type(f.type)
            wrong = not isinstance(raw, expected) or (expected is int and isinstance(raw, bool))
            if wrong:
                got = type(raw).__name__
                raise ConfigError(f"{key}: expected {_TYPE_NAMES.get(expected, expected.__name__)}, got {got} {raw!r}")
        try:
            values[name] = _PARSERS[kind](raw) if kind else raw
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
    return cls(**values)


def parse(text: str, path: Path | str = "<config>") -> Config:
    where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid TOML: nested too deeply") from None
    for name in data:
        if name not in SECTIONS:
            raise ConfigError(f"{where}: [{name}]: unknown section (known: {', '.join(SECTIONS)})")
    for name in REQUIRED_SECTIONS:
        if name not in data:
            raise ConfigError(f"{where}: [{name}]: missing section (it is required)")
    sections = {name: _section(SECTIONS[name], table, f"{where}: {name}") for name, table in data.items()}
    config = Config(**sections, path=Path(path))
    problem = _inconsistency(config)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return config


def _inconsistency(config: Config) -> str | None:
    """What single sections cannot see: keys that depend on each other."""
    m, mqtt = config.machine, config.mqtt
    if m.max_session is not None and m.warn_before >= m.max_session:
        return "machine.warn_before: must be shorter than machine.max_session"
    if config.sensor.idle_timeout is not None and config.sensor.pin is None:
        return "sensor.idle_timeout: needs sensor.pin (the machine-running input)"
    if str(config.storage.dir) in ("", "."):
        return "storage.dir: must name a directory"
    pins: dict[int, str] = {}
    named = [("relay.pin", config.relay.pin), ("sensor.pin", config.sensor.pin)]
    named += [(f"indicators.{k}", getattr(config.indicators, k)) for k in ("green", "red", "amber", "buzzer", "heartbeat")]
    if config.reader.type == "mfrc522":
        named.append(("reader.reset_pin", config.reader.reset_pin))
    for key, pin in named:
        if pin is not None and pin in pins:
            return f"{key}: GPIO {pin} is already used by {pins[pin]}"
        if pin is not None:
            pins[pin] = key
    if config.reader.type in ("rdm6300", "head") and not config.reader.port:
        return f"reader.port: required for a {config.reader.type} reader (e.g. /dev/serial0)"
    if mqtt is not None:
        from agent.link.broker import BadBrokerURL, Broker

        try:
            Broker.parse(mqtt.url)
        except BadBrokerURL as err:
            return f"mqtt.url: {err}"
        if not 1 <= mqtt.keepalive <= 30:
            return "mqtt.keepalive: must be 1 to 30 seconds (the will must fire within about 45 s)"
        if mqtt.outbox_limit < 1:
            return "mqtt.outbox_limit: must be at least 1"
        if not mqtt.topic_prefix or any(c in mqtt.topic_prefix for c in "+#\0") or mqtt.topic_prefix.startswith("/"):
            return f"mqtt.topic_prefix: {mqtt.topic_prefix!r} cannot be used in topics (no +, #, leading /)"
    if config.members.public_key is not None:
        from agent.signing import load_public_key

        try:
            load_public_key(config.members.public_key)
        except ValueError as err:
            return f"members.public_key: {err}"
    return None


def load(path: Path | str, simulate: bool = False) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    config = parse(text, path)
    if simulate:
        config = dataclasses.replace(config, hardware=HardwareConfig(simulate=True))
    return config
