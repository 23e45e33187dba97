"""A machine with secure cards, as the tests set it up: the lab's master key in its
file (mode 0600) and the shared machine template with `[reader] secure`."""

from __future__ import annotations

from pathlib import Path

from tests.support.agents import config_text

MASTER = bytes.fromhex("00112233445566778899AABBCCDDEEFF")  # the contract's check-value master key


def key_file(tmp_path: Path, mode: int = 0o600, text: str = MASTER.hex().upper()) -> Path:
    path = tmp_path / "card.key"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def secure_text(tmp_path: Path, key: Path | None = None, reader: str = "", machine: str = "") -> str:
    """The config of an MFRC522 machine with secure cards, its storage in tmp_path/state;
    `reader` and `machine` are TOML lines added to those sections."""
    key = key or key_file(tmp_path)
    return config_text(tmp_path / "state", machine=machine).replace(
        'type = "simulated"', f'type = "mfrc522"\nsecure = "ntag424"\ncard_key_file = "{key}"\n{reader}'.rstrip())
