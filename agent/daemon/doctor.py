"""`fabpass doctor`: is this Pi ready to run its machine?

Each check is a pure function of a machine config and what a small probe saw,
so the checks are tested anywhere and the probes (which touch SPI, GPIO,
serial ports, the clock and the broker) stay a few lines each. A probe that
cannot run here (no GPIO on a laptop) is a result too, never a crash. Nothing
here switches the relay on: the relay probe claims the pin at its off level.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

from agent.config import Config
from agent.daemon.clock import ClockState, read_state

SERVICE_USER = "fabpass"
SERIAL_READERS = ("rdm6300", "head")
OK, WARN, FAIL = "ok", "warn", "fail"
NO_SPIDEV = "the spidev module is not installed"


@dataclass(frozen=True)
class Result:
    status: str  # ok | warn | fail
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.check}: {self.detail}" + (f" — {self.fix}" if self.fix else "")

    def to_json(self) -> dict[str, str]:
        return asdict(self)


# --- the checks: pure ---------------------------------------------------------


def check_spi(config: Config, spidevs: list[str]) -> Result:
    if config.reader.type != "mfrc522":
        return Result(OK, "spi", f"not needed by the {config.reader.type} reader")
    wanted = f"/dev/spidev{config.reader.bus}.{config.reader.device}"
    if wanted in spidevs:
        return Result(OK, "spi", f"{wanted} is there")
    seen = ", ".join(spidevs) or "no /dev/spidev* at all"
    return Result(FAIL, "spi", f"{wanted} is missing ({seen})",
                  "sudo raspi-config nonint do_spi 0 (or dtparam=spi=on in /boot/firmware/config.txt), then reboot")


def check_reader(config: Config, seen: int | str | None) -> Result:
    """`seen`: the MFRC522's version register, the serial port opened (None), or an error."""
    kind = config.reader.type
    if config.simulate or kind == "simulated":
        return Result(OK, "reader", "simulated: no hardware to check")
    if seen == NO_SPIDEV:
        return Result(FAIL, "reader", seen, "re-run deploy/install.sh (it installs fabpass with its pi extra)")
    if isinstance(seen, str):
        fix = ("check the wiring (3.3 V, SDA/CS, SCK, MOSI, MISO) and [reader] bus/device" if kind == "mfrc522"
               else f"check [reader] port and that {SERVICE_USER} may open it (group dialout)")
        return Result(FAIL, "reader", seen, fix)
    if kind != "mfrc522":
        return Result(OK, "reader", f"{kind} port {config.reader.port or '/dev/serial0'} opens")
    from agent.hardware.mfrc522chip import KNOWN_VERSIONS

    if seen in KNOWN_VERSIONS:
        return Result(OK, "reader", f"{KNOWN_VERSIONS[seen]} answers (version 0x{seen:02X})")
    return Result(FAIL, "reader", f"no MFRC522 answers on SPI (version register reads 0x{seen or 0:02X})",
                  "check the wiring (3.3 V, SDA/CS, SCK, MOSI, MISO) and [reader] bus/device")


@dataclass(frozen=True)
class RelaySeen:
    """What the relay probe saw: the pin held at its off level, or why not."""

    held_off: bool = False
    busy: bool = False
    error: str = ""


def check_relay(config: Config, seen: RelaySeen) -> Result:
    pin, level = config.relay.pin, "low" if config.relay.active_high else "high"
    if seen.held_off:
        return Result(OK, "relay", f"GPIO{pin} is free and at its off level ({level})")
    if seen.busy:
        return Result(WARN, "relay", f"GPIO{pin} is in use, by the running agent if all is well",
                      "to test the pin itself: sudo systemctl stop fabpass, then run doctor again")
    return Result(FAIL, "relay", f"GPIO{pin} cannot be driven: {seen.error}",
                  f"run on the Pi, as a user in the gpio group (sudo usermod -aG gpio {SERVICE_USER})")


def needed_groups(config: Config) -> list[str]:
    groups = ["gpio"]
    if config.reader.type == "mfrc522":
        groups.append("spi")
    if config.reader.type in SERIAL_READERS:
        groups.append("dialout")
    return groups


def check_groups(config: Config, user: str, member_of: set[str], existing: set[str]) -> Result:
    needed = needed_groups(config)
    absent = [g for g in needed if g not in existing]
    missing = [g for g in needed if g in existing and g not in member_of]
    if absent:
        return Result(FAIL, "groups", f"no group {', '.join(absent)} on this system",
                      "run on Raspberry Pi OS, whose udev rules give these groups the devices")
    if missing:
        return Result(FAIL, "groups", f"{user} is not in {', '.join(missing)}",
                      f"sudo usermod -aG {','.join(missing)} {user}, then restart the service")
    return Result(OK, "groups", f"{user} is in {', '.join(needed)}")


def check_card_key(config: Config, error: str | None) -> Result:
    """Secure cards: `error` is why the key file could not be used, or None (never the key)."""
    path = config.reader.card_key_file
    if config.simulate:
        return Result(OK, "card key", "simulated: no cards to check")
    if error is None:
        return Result(OK, "card key", f"{path} holds an AES-128 key that only its owner may read")
    if "readable by others" in error:
        fix = f"chmod 600 {path}"
    elif "cannot read" in error and "No such file" in error:
        fix = (f"put the lab's master key there, the same file on every machine: "
               f"(umask 077; openssl rand -hex 16 > {path}) once, then copy it; see docs/cards.md")
    elif "cannot read" in error:
        fix = f"sudo chown {SERVICE_USER} {path}; sudo chmod 600 {path}"
    else:
        fix = "it must hold the lab's master key as 32 hex digits (docs/cards.md)"
    return Result(FAIL, "card key", error, fix)


CLOCK_FIXES = (
    "serve NTP from the broker host (chrony there with `allow` for the lab's network; on each Pi "
    "NTP=broker.lab in /etc/systemd/timesyncd.conf, then timedatectl set-ntp true); or fit an RTC "
    "(a Pi 5 with its battery keeps time across power cuts) and set [clock] require_sync = false")
TRUST_RISK = ("[clock] require_sync = false trusts the clock as it is: without an RTC a Pi boots with the "
              "time of its last shutdown, so after a power cut a membership or induction that has since "
              "expired is granted and opening hours are judged by the wrong time, until NTP sets it")


def check_clock(config: Config, state: ClockState) -> Result:
    """The clock as the agent reads it (agent.daemon.clock), and what the config makes of it."""
    if state.synchronised:
        return Result(OK, "clock", f"{state.detail} ({state.source})")
    if not config.require_sync:
        if config.clock.require_sync is None:
            return Result(OK, "clock", f"simulation trusts the host's clock ({state.detail})")
        return Result(WARN, "clock", f"{state.detail}; trusted anyway ([clock] require_sync = false)",
                      f"only with a battery-backed RTC: {TRUST_RISK}")
    fix = CLOCK_FIXES
    if "ProtectClock" in state.detail:
        fix = ("let the agent read the clock: no ProtectClock=yes, and clock_adjtime in SystemCallFilter= "
               "(as deploy/fabpass.service ships); then " + CLOCK_FIXES)
    return Result(FAIL, "clock", f"{state.detail}: members with expiry dates and machines with opening hours "
                  "are refused (clock_unsynchronised)", f"{fix}. {TRUST_RISK}")


def check_broker(config: Config, error: str | None, where: str) -> Result:
    if config.mqtt is None:
        return Result(WARN, "broker", "no [mqtt] section: events wait in the local outbox",
                      "add [mqtt] url = \"mqtts://…\" to reach the lab's broker")
    if error is None:
        return Result(OK, "broker", f"connected to {where}")
    fix = ("check [mqtt] username and password_file (add-machine on the broker makes the account)"
           if "authori" in error.lower() or "password" in error.lower()
           else "is the broker running and reachable from here (host, port, firewall, ca_file)?")
    return Result(FAIL, "broker", f"{where}: {error}", fix)


# --- the probes: small, and each touches one thing ---------------------------------


def probe_spidevs() -> list[str]:
    return sorted(glob.glob("/dev/spidev*"))


def probe_mfrc522_version(bus: int, device: int) -> int | str:
    """The MFRC522's VersionReg (0x37), read through spidev directly."""
    try:
        import spidev  # type: ignore[import-not-found]
    except ImportError:
        return NO_SPIDEV
    spi = spidev.SpiDev()
    try:
        spi.open(bus, device)
        spi.max_speed_hz = 1_000_000
        spi.mode = 0
        # An address byte: bit 7 set to read, the register in bits 6-1.
        return spi.xfer2([0x80 | (0x37 << 1), 0])[1]
    except OSError as err:
        return f"/dev/spidev{bus}.{device}: {err.strerror or err}"
    finally:
        spi.close()


def probe_serial(port: str, baudrate: int) -> str | None:
    import serial

    try:
        serial.serial_for_url(port, baudrate=baudrate, timeout=0).close()
    except (serial.SerialException, OSError, ValueError) as err:
        return f"{port}: {err}"
    return None


def probe_reader(config: Config) -> int | str | None:
    if config.simulate or config.reader.type == "simulated":
        return None
    if config.reader.type == "mfrc522":
        return probe_mfrc522_version(config.reader.bus, config.reader.device)
    return probe_serial(config.reader.port or "/dev/serial0", config.reader.baudrate)


def probe_relay(config: Config) -> RelaySeen:
    """Claim the relay pin at its off level (never on), then let it go."""
    from gpiozero import DigitalOutputDevice
    from gpiozero.exc import GPIOPinInUse

    from agent.hardware.factory import pin_factory

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero's fallback warnings; the error says enough
            relay = DigitalOutputDevice(config.relay.pin, active_high=config.relay.active_high,
                                        initial_value=False, pin_factory=pin_factory(config.simulate))
    except GPIOPinInUse:
        return RelaySeen(busy=True)
    except Exception as err:  # gpiozero raises many kinds: no factory, no permission, no chip
        return RelaySeen(error=f"{type(err).__name__}: {err}")
    try:
        return RelaySeen(held_off=not relay.value)
    finally:
        relay.close()


def probe_card_key(config: Config) -> str | None:
    """Read the secure cards' key file as the agent does at start; why it cannot be used, or None."""
    from agent.hardware.cardkeys import CardKeyError, load_master_key

    try:
        load_master_key(config.reader.card_key_file or "")
    except CardKeyError as err:
        return str(err)
    return None


def probe_user_groups() -> tuple[str, set[str], set[str]]:
    """The service user (or, where it does not exist, whoever runs doctor), its groups, and all groups."""
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        entry = pwd.getpwuid(os.getuid())
    groups = {g.gr_name for g in grp.getgrall() if entry.pw_name in g.gr_mem}
    try:
        groups.add(grp.getgrgid(entry.pw_gid).gr_name)
    except KeyError:
        pass
    return entry.pw_name, groups, {g.gr_name for g in grp.getgrall()}


def probe_broker(config: Config, timeout: float = 3.0) -> tuple[str | None, str]:
    """Connect with the configured credentials; None when the broker accepts them."""
    from agent.link.broker import BadBrokerURL, Broker, make_client

    if config.mqtt is None:
        return None, ""
    mqtt = config.mqtt
    try:
        broker = Broker.parse(mqtt.url).with_credentials(
            mqtt.username, mqtt.password_file, mqtt.ca_file, mqtt.cert_file, mqtt.key_file)
    except (BadBrokerURL, OSError) as err:
        return str(err), mqtt.url
    # A client id of its own: the agent's connection must not be taken over.
    client = make_client(broker, client_id=f"{config.machine.id}-doctor-{os.getpid()}")
    client.connect_timeout = timeout
    answer: list[str] = []
    client.on_connect = lambda c, u, flags, reason, props: answer.append(
        "" if not reason.is_failure else f"refused: {reason}")
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (OSError, ValueError) as err:
        return str(err), str(broker)
    try:
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    finally:
        client.disconnect()
        client.loop(timeout=0.1)  # sends DISCONNECT, then paho closes the socket
    if not answer:
        return f"no answer within {timeout:g} s", str(broker)
    return answer[0] or None, str(broker)


@dataclass
class Probes:
    """The probes doctor runs; tests swap single ones."""

    spidevs: Callable[[], list[str]] = probe_spidevs
    reader: Callable[[Config], int | str | None] = probe_reader
    relay: Callable[[Config], RelaySeen] = probe_relay
    user_groups: Callable[[], tuple[str, set[str], set[str]]] = probe_user_groups
    clock: Callable[[], ClockState] = read_state
    broker: Callable[[Config], tuple[str | None, str]] = probe_broker
    card_key: Callable[[Config], str | None] = probe_card_key  # secure cards


def diagnose(config: Config, probes: Probes | None = None) -> list[Result]:
    probes = probes or Probes()
    user, member_of, existing = probes.user_groups()
    broker_error, where = probes.broker(config)
    results = [
        check_spi(config, probes.spidevs()),
        check_reader(config, probes.reader(config)),
        check_relay(config, probes.relay(config)),
        check_groups(config, user, member_of, existing),
        check_clock(config, probes.clock()),
        check_broker(config, broker_error, where),
    ]
    if config.reader.secure is not None:  # secure cards
        results.insert(2, check_card_key(config, None if config.simulate else probes.card_key(config)))
    return results
