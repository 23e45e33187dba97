"""`fabpass cards provision` over the reader's real path: the MFRC522 backend's card port
(agent.hardware.mfrc522.MFRC522CardPort, as `open_card_port` opens it) and the
unmodified `mfrc522` driver over the project's emulated chip in real time, with the
emulated NTAG 424 DNA cards on it; the config, the key files and the agent's control
socket as they are. A provisioned card then taps on the machine's agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from gpiozero import Device

from agent.cli import main
from agent.devtools.emulated_mfrc522 import EmulatedMFRC522, RealTime, installed
from agent.devtools.emulated_ntag424 import Ntag424, UidClone
from agent.hardware.cardkeys import diversify
from tests.support.agents import RunningAgent, members_json
from tests.support.cards import MASTER, key_file, secure_text
from tests.support.helpers import wait_for

UID = bytes.fromhex("04A1B2C3D4E5F6")  # Ada's badge in the tests' member list


@pytest.fixture
def station(tmp_path, monkeypatch):
    """A machine config with secure cards, and the emulated MFRC522 its reader opens."""
    config = tmp_path / "agent.toml"
    config.write_text(secure_text(tmp_path))
    chip = EmulatedMFRC522(clock=RealTime())
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")  # RST on gpiozero's mock pins, as on a Pi its own
    previous, Device.pin_factory = Device.pin_factory, None
    try:
        with installed({(0, 0): chip}):
            yield config, chip
    finally:
        if Device.pin_factory is not None:
            Device.pin_factory.close()
        Device.pin_factory = previous


def released(chip: EmulatedMFRC522) -> bool:
    """The command let go of the reader: SPI closed, the field off."""
    return chip.open_handles == 0 and not chip.field_on


def provision(config: Path, *options: str):
    return CliRunner().invoke(main, ["cards", "provision", "--config", str(config), *options])


def test_cards_provision_a_factory_card_prints_its_uid_and_then_taps(station):
    config, chip = station
    card = chip.place(Ntag424(UID))
    result = provision(config)
    assert result.exit_code == 0, result.output
    assert result.stdout == "04A1B2C3D4E5F6\n"
    assert "now holds this lab's key" in result.stderr
    assert card.application.keys[2] == diversify(MASTER, UID) and released(chip)
    again = provision(config)
    assert again.exit_code == 0 and "already held" in again.stderr and released(chip)
    agent = RunningAgent(config.read_text(), simulate=False, config_reader=True)  # the machine, started again
    try:
        agent.apply(members_json())
        wait_for(lambda: any(e["type"] == "session_started" for e in agent.events()), 10, "the card's tap")
        assert agent.relay_is_on()
    finally:
        agent.stop()


def test_cards_provision_with_key0_old_key_and_a_rotated_master(station, tmp_path):
    config, chip = station
    key0, old = bytes(range(16)), bytes(range(16, 32))
    card = chip.place(Ntag424(UID, {0: key0, 2: old}))
    result = provision(config, "--key0", key0.hex(), "--old-key", old.hex())
    assert result.exit_code == 0, result.output
    assert card.application.keys[2] == diversify(MASTER, UID)
    old_master = tmp_path / "old.key"
    old_master.write_text(MASTER.hex())
    old_master.chmod(0o600)
    new = tmp_path / "new.key"
    new.write_text("FF" * 16)
    new.chmod(0o600)
    config.write_text(config.read_text().replace(str(tmp_path / "card.key"), str(new)))
    result = provision(config, "--key0", key0.hex(), "--old-key-file", str(old_master))
    assert result.exit_code == 0, result.output
    assert card.application.keys[2] == diversify(bytes.fromhex("FF" * 16), UID)


@pytest.mark.parametrize("card, why", [
    (Ntag424(UID, {0: bytes(range(16))}), "key 0 is not the one given"),
    (Ntag424(UID, {2: bytes(range(16))}), "key 2 was not changed"),
    (UidClone(UID), "does not speak ISO 14443-4"),
])
def test_cards_provision_failures_exit_1_with_the_reason(station, card, why):
    config, chip = station
    chip.place(card)
    result = provision(config)
    assert result.exit_code == 1 and result.stdout == "" and released(chip)
    assert "04A1B2C3D4E5F6: not provisioned" in result.stderr and why in result.stderr


def test_cards_provision_no_card_within_the_wait(station):
    config, chip = station
    result = provision(config, "--wait", "0.3s")
    assert result.exit_code == 1 and "no card on the reader within 0.3 s" in result.stderr and released(chip)


@pytest.mark.parametrize("options, message", [
    (["--key0", "00"], "--key0: an AES-128 key is 32 hex digits"),
    (["--old-key", "zz" * 16], "--old-key: an AES-128 key is 32 hex digits"),
    (["--old-key", "00" * 16, "--old-key-file", "x"], "give --old-key or --old-key-file, not both"),
    (["--wait", "soon"], "--wait:"),
    (["--old-key-file", "/nonexistent/old.key"], "/nonexistent/old.key: cannot read"),
])
def test_cards_provision_bad_options_exit_2(station, options, message):
    config, chip = station
    card = chip.place(Ntag424(UID))
    result = provision(config, *options)
    assert result.exit_code == 2 and message in result.output
    assert card.apdus == []  # nothing was sent to the card


def test_cards_provision_needs_secure_cards_and_a_private_key_file(station, tmp_path):
    config, _ = station
    config.write_text(config.read_text().replace('secure = "ntag424"\n', "").replace(
        f'card_key_file = "{tmp_path / "card.key"}"\n', ""))
    result = provision(config)
    assert result.exit_code == 2 and "reader.secure: set it to" in result.output
    config.write_text(secure_text(tmp_path, key_file(tmp_path, 0o644)))
    result = provision(config)
    assert result.exit_code == 2 and "reader.card_key_file:" in result.output and "chmod 600" in result.output
    assert MASTER.hex() not in result.output.lower()


def test_cards_provision_refuses_while_the_agent_runs(station):
    config, chip = station
    card = chip.place(Ntag424(UID))
    agent = RunningAgent(config.read_text(), simulate=True)
    try:
        wait_for(lambda: (config.parent / "state" / "agent.sock").exists(), 10, "the agent's socket")
        result = provision(config)
        assert result.exit_code == 1 and "stop it first" in result.stderr
        assert card.apdus == []
    finally:
        agent.stop()


def test_cards_provision_without_a_reader_here_says_why_it_cannot(tmp_path):
    """Without the emulated chip: no Pi here, so exit 1 and why."""
    config = tmp_path / "agent.toml"
    config.write_text(secure_text(tmp_path))
    result = CliRunner().invoke(main, ["cards", "provision", "--config", str(config)])
    assert result.exit_code == 1 and "cannot open the mfrc522 reader" in result.stderr
