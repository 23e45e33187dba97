"""The machine config: one TOML file per machine, read into frozen dataclasses.

Every problem is a ConfigError whose message names the file, the key and what
is wrong; unknown keys and wrong types are errors, never surprises later.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.hours import OpeningHours
from agent.core.model import MACHINE_ID_RULE, is_machine_id
from agent.core.timespec import parse_duration

if TYPE_CHECKING:
    import zoneinfo

READER_TYPES = ("simulated", "mfrc522", "rdm6300", "head")
SECURE_CARDS = ("ntag424",)
REQUIRED = object()


class ConfigError(ValueError):
    """A config file that cannot be used; the message is for a person."""


def _opt(doc: str, default: Any = REQUIRED, kind: str | None = None) -> Any:
    """A config key: what it does (the config reference, docs/reference/config.md, is
    made from these), its default, and `kind`, a parser beyond the Python type."""
    meta = {"kind": kind, "doc": doc, "required": default is REQUIRED}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class MachineConfig:
    """The machine this agent guards."""

    id: str = _opt(f"unique in the lab, {MACHINE_ID_RULE}; names the machine's MQTT topics", kind="machine_id")
    induction: str = _opt("the induction a member must hold to use the machine")
    name: str = _opt("a name for people, e.g. 'Laser cutter (Trotec Speedy 400)'", "")
    max_session: float | None = _opt("a session ends (timeout) after this long; a tap in the warning "
                                     "window extends it", None, "duration")
    warn_before: float = _opt("warn this long before max_session ends a session", 300.0, "duration")
    hard_limit: float | None = _opt("ends a session even while the machine runs", None, "duration")
    timezone: str | None = _opt("the zone of expiry dates and opening hours, e.g. 'Europe/Rome'; "
                                "default: the system's", None, "timezone")
    hours: OpeningHours | None = _opt("opening hours, e.g. ['mon-fri 09:00-19:00', 'sat 10:00-14:00']; "
                                      "staff may use the machine outside them", None, "hours")


@dataclass(frozen=True)
class ReaderConfig:
    """The badge reader."""

    type: str = _opt("simulated, mfrc522, rdm6300 or head", kind="reader_type")
    port: str | None = _opt("rdm6300 and head: the serial device (pyserial URLs too), e.g. /dev/serial0", None)
    baudrate: int = _opt("rdm6300 and head: the serial speed", 9600)
    bus: int = _opt("mfrc522: the SPI bus (/dev/spidevBUS.DEVICE)", 0)
    device: int = _opt("mfrc522: the SPI chip select", 0)
    reset_pin: int = _opt("mfrc522: the BCM pin wired to RST", 25, "pin")
    rearm: float = _opt("a card counts as a new tap after this long away", 0.5, "duration")
    poll_interval: float = _opt("how often an MFRC522 looks for a card while none is on it (each look "
                                "costs about 150 us of CPU on a Pi)", 0.016, "duration")
    # secure cards
    secure: str | None = _opt("ntag424: every card must prove it is one of the lab's NTAG 424 DNA (AES "
                              "authentication) or be refused card_not_authentic, except badges listed uid:; "
                              "mfrc522 readers only (docs/cards.md)", None)
    card_key_file: str | None = _opt("secure: the lab's AES-128 master key, 32 hex digits, in a file only the "
                                     "agent's user may read (mode 0600); never logged", None)
    card_key_no: int = _opt("secure: the card key (0-4) a tap authenticates, holding the master key's "
                            "diversification with the card's UID", 2)


@dataclass(frozen=True)
class RelayConfig:
    """The relay on the machine's power or enable line."""

    pin: int = _opt("the BCM pin driving the relay board's IN", kind="pin")
    active_high: bool = _opt("true when the board switches on a high level; most boards are active-low "
                             "(false). Required: a wrong guess would power the machine")
    min_off: float = _opt("shortest time off between two sessions", 0.0, "duration")
    run_on: float = _opt("the relay stays on this long after a session ends (a dust extractor)", 0.0, "duration")


@dataclass(frozen=True)
class IndicatorConfig:
    """What a member sees and hears; every output is optional."""

    green: int | None = _opt("the BCM pin of the green LED (granted, ended)", None, "pin")
    red: int | None = _opt("the BCM pin of the red LED (refused)", None, "pin")
    amber: int | None = _opt("the BCM pin of the amber LED (ending soon, reader not answering)", None, "pin")
    buzzer: int | None = _opt("the BCM pin of a buzzer", None, "pin")
    active_high: bool = _opt("true when the LEDs light on a high level", True)
    heartbeat: int | None = _opt("a pin that toggles while the agent is healthy, for a hardware watchdog",
                                 None, "pin")


@dataclass(frozen=True)
class SensorConfig:
    """A machine-running input: a current sensor or the machine's busy signal."""

    pin: int | None = _opt("the BCM pin of the machine-running input", None, "pin")
    active_high: bool = _opt("true when a high level means the machine runs", True)
    idle_timeout: float | None = _opt("a session ends after the machine idles this long", None, "duration")


@dataclass(frozen=True)
class MqttConfig:
    """The broker; without this section events wait in the outbox."""

    url: str = _opt("mqtt://[user@]host[:port] or mqtts://… (TLS)")
    topic_prefix: str = _opt("the prefix of every topic", "fabpass")
    username: str | None = _opt("the broker account (the machine id, by the lab's convention)", None)
    password_file: str | None = _opt("a file holding the broker password", None)
    ca_file: str | None = _opt("mqtts: the CA that signed the broker's certificate", None)
    cert_file: str | None = _opt("mqtts: this machine's client certificate", None)
    key_file: str | None = _opt("mqtts: the key of the client certificate", None)
    keepalive: int = _opt("seconds, 1 to 30: the broker publishes the will within about 1.5 times this", 30)
    outbox_limit: int = _opt("events kept for the broker and the logbook at most; at the bound the oldest the "
                             "broker took make room, then refusals are dropped and no session starts", 100_000)
    resend_after: float = _opt("events the logbook's archived mark has not covered this long after they were "
                               "sent are sent again (then at doubling intervals, up to an hour)", 60.0, "duration")


@dataclass(frozen=True)
class MembersConfig:
    """The member list."""

    public_key: str | None = _opt("base64 Ed25519 key: only lists and commands signed by its private key "
                                  "are accepted", None)
    max_list_age: float | None = _opt("refuse non-staff (stale_member_list) when the list was generated "
                                      "longer ago (its generated_at), its age is unknown, or the clock is not "
                                      "trusted; keep it fresh with a daily fabpass members refresh", None,
                                      "duration")
    badge_hash_key_file: str | None = _opt("a site key (mode 0600): badges are kept and reported as keyed "
                                           "hashes, never as UIDs", None)


# -- trust (issue 17) ------------------------------------------------------------


@dataclass(frozen=True)
class ClockConfig:
    """The system clock, which expiry dates, opening hours and max_list_age are judged by."""

    require_sync: bool | None = _opt(
        "true: rules that depend on the date refuse (clock_unsynchronised) until NTP has synchronised the "
        "clock, and a list's age counts as stale; false: trust the clock as it is (a Pi with a battery-backed "
        "RTC). Default true, false in simulation", None)


@dataclass(frozen=True)
class CommandsConfig:
    """Technicians' remote commands (lock, unlock, end_session)."""

    max_age: float = _opt("a command sent longer ago than this, or dated that far ahead, is refused "
                          "(command_rejected)", 60.0, "duration")


# -- end of trust -----------------------------------------------------------------


@dataclass(frozen=True)
class StorageConfig:
    """Where the agent keeps its state."""

    dir: Path = _opt("the member cache and the event outbox live here", kind="path")
    keep: float = _opt("events are kept until the logbook confirms them, or this long at most: without a "
                       "logbook nothing grows without bound", 30 * 86400.0, "duration")


@dataclass(frozen=True)
class HardwareConfig:
    """Real or simulated parts."""

    simulate: bool = _opt("mock GPIO pins and a simulated reader (as --simulate or FABPASS_SIMULATE=1)", False)


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
    clock: ClockConfig = field(default_factory=ClockConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    path: Path | None = None

    @property
    def tz(self) -> zoneinfo.ZoneInfo | None:
        import zoneinfo  # here, not at the top: the command line reads configs without zones

        return zoneinfo.ZoneInfo(self.machine.timezone) if self.machine.timezone else None

    @property
    def simulate(self) -> bool:
        return self.hardware.simulate or os.environ.get("FABPASS_SIMULATE", "") not in ("", "0")

    @property
    def require_sync(self) -> bool:
        """Whether date rules wait for a synchronised clock: the config's word, else
        yes on hardware and no in simulation (the host's clock is trusted)."""
        return self.clock.require_sync if self.clock.require_sync is not None else not self.simulate


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
    "clock": ClockConfig,
    "commands": CommandsConfig,
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
    import zoneinfo

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
    if config.storage.keep < 3600:
        return "storage.keep: must be at least an hour (1h)"
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
    problem = _secure_cards(config.reader)
    if problem:
        return problem
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
        if mqtt.resend_after < 1:
            return "mqtt.resend_after: must be at least 1 second"
        if not mqtt.topic_prefix or any(c in mqtt.topic_prefix for c in "+#\0") or mqtt.topic_prefix.startswith("/"):
            return f"mqtt.topic_prefix: {mqtt.topic_prefix!r} cannot be used in topics (no +, #, leading /)"
    if config.commands.max_age <= 0:
        return "commands.max_age: must be more than zero"
    if config.members.public_key is not None:
        from agent.signing import load_public_key

        try:
            load_public_key(config.members.public_key)
        except ValueError as err:
            return f"members.public_key: {err}"
    return None


def _secure_cards(reader: ReaderConfig) -> str | None:
    """The secure-card keys, which go together (the key file itself is read at start)."""
    if reader.secure is None:
        return "reader.card_key_file: used only with reader.secure" if reader.card_key_file is not None else None
    if reader.secure not in SECURE_CARDS:
        return f"reader.secure: {reader.secure!r} is not a secure card this fabpass reads ({', '.join(SECURE_CARDS)})"
    if reader.type != "mfrc522":
        return f"reader.secure: needs an mfrc522 reader (this one is {reader.type})"
    if reader.card_key_file is None:
        return "reader.card_key_file: required with reader.secure (the lab's master key, 32 hex digits, mode 0600)"
    if not reader.card_key_file.strip():
        return "reader.card_key_file: must name a file"
    if not 0 <= reader.card_key_no <= 4:
        return f"reader.card_key_no: {reader.card_key_no} is not an NTAG 424 DNA key number (0-4)"
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
