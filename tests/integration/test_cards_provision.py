"""`fabpass cards provision` against the project's emulated cards. The reader is the
one part that cannot run here: `open_card_port` hands the command an emulated
field at the same port the MFRC522 offers (MFRC522CardPort, tested over the
emulated chip in test_reader_mfrc522.py). Everything else is the command's real
path: the config, the key files, the agent's control socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.hardware.cardkeys import diversify
from tests.support.agents import RunningAgent
from tests.support.cards import MASTER, key_file, secure_text
from tests.support.emulated_ntag424 import CardField, Ntag424, UidClone
from tests.support.helpers import wait_for

UID = bytes.fromhex("04A1B2C3D4E5F6")


@pytest.fixture
def station(tmp_path, monkeypatch):
    """A machine config with secure cards, and the emulated field its reader opens."""
    config = tmp_path / "agent.toml"
    config.write_text(secure_text(tmp_path))
    field = CardField()
    monkeypatch.setattr("agent.hardware.factory.open_card_port", lambda reader: field)
    return config, field


def provision(config: Path, *options: str):
    return CliRunner().invoke(main, ["cards", "provision", "--config", str(config), *options])


def test_cards_provision_a_factory_card_prints_its_uid(station):
    config, field = station
    card = field.place(Ntag424(UID))
    result = provision(config)
    assert result.exit_code == 0, result.output
    assert result.stdout == "04A1B2C3D4E5F6\n"
    assert "now holds this lab's key" in result.stderr
    assert card.application.keys[2] == diversify(MASTER, UID) and field.closed
    again = provision(config)
    assert again.exit_code == 0 and "already held" in again.stderr


def test_cards_provision_with_key0_old_key_and_a_rotated_master(station, tmp_path):
    config, field = station
    key0, old = bytes(range(16)), bytes(range(16, 32))
    card = field.place(Ntag424(UID, {0: key0, 2: old}))
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
    config, field = station
    field.place(card)
    result = provision(config)
    assert result.exit_code == 1 and result.stdout == ""
    assert "04A1B2C3D4E5F6: not provisioned" in result.stderr and why in result.stderr


def test_cards_provision_no_card_within_the_wait(station):
    config, _ = station
    result = provision(config, "--wait", "0.3s")
    assert result.exit_code == 1 and "no card on the reader within 0.3 s" in result.stderr


@pytest.mark.parametrize("options, message", [
    (["--key0", "00"], "--key0: an AES-128 key is 32 hex digits"),
    (["--old-key", "zz" * 16], "--old-key: an AES-128 key is 32 hex digits"),
    (["--old-key", "00" * 16, "--old-key-file", "x"], "give --old-key or --old-key-file, not both"),
    (["--wait", "soon"], "--wait:"),
    (["--old-key-file", "/nonexistent/old.key"], "/nonexistent/old.key: cannot read"),
])
def test_cards_provision_bad_options_exit_2(station, options, message):
    config, field = station
    card = field.place(Ntag424(UID))
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
    config, field = station
    card = field.place(Ntag424(UID))
    agent = RunningAgent(config.read_text(), simulate=True)
    try:
        wait_for(lambda: (config.parent / "state" / "agent.sock").exists(), 10, "the agent's socket")
        result = provision(config)
        assert result.exit_code == 1 and "stop it first" in result.stderr
        assert card.apdus == []
    finally:
        agent.stop()


def test_cards_provision_without_a_reader_here_says_why_it_cannot(tmp_path):
    """Without the emulated field, the real MFRC522 backend: no Pi here, so exit 1 and why.
    (The port itself provisions cards over the emulated chip: test_reader_mfrc522.py.)"""
    config = tmp_path / "agent.toml"
    config.write_text(secure_text(tmp_path))
    result = CliRunner().invoke(main, ["cards", "provision", "--config", str(config)])
    assert result.exit_code == 1 and "cannot open the mfrc522 reader" in result.stderr
