"""fabpass doctor with secure cards: the key file checked as the agent reads it at
start, each problem with its fix, and never the key itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import parse
from agent.daemon.doctor import (
    FAIL,
    OK,
    Probes,
    RelaySeen,
    check_card_key,
    diagnose,
    probe_card_key,
)
from tests.support.cards import MASTER, key_file, secure_text


def config_for(tmp_path: Path, key: Path):
    return parse(secure_text(tmp_path, key), "agent.toml")


def test_doctor_card_key_ok(tmp_path: Path) -> None:
    config = config_for(tmp_path, key_file(tmp_path))
    result = check_card_key(config, probe_card_key(config))
    assert result.status == OK and str(tmp_path / "card.key") in result.detail


@pytest.mark.parametrize("mode, text, fix", [
    (0o644, MASTER.hex(), "chmod 600"),
    (0o600, "0011", "32 hex digits"),
])
def test_doctor_card_key_problems_and_their_fixes(tmp_path: Path, mode: int, text: str, fix: str) -> None:
    config = config_for(tmp_path, key_file(tmp_path, mode, text))
    result = check_card_key(config, probe_card_key(config))
    assert result.status == FAIL and fix in result.fix
    assert MASTER.hex() not in result.line().lower()


def test_doctor_card_key_missing_says_how_to_make_one(tmp_path: Path) -> None:
    config = config_for(tmp_path, tmp_path / "absent.key")
    result = check_card_key(config, probe_card_key(config))
    assert result.status == FAIL and "openssl rand -hex 16" in result.fix and "umask 077" in result.fix


def test_doctor_card_key_unreadable_by_the_service_user(tmp_path: Path) -> None:
    """Owned by root with mode 0600: the agent's user cannot read it (what the probe
    sees when doctor runs as that user, as its help says to)."""
    config = config_for(tmp_path, tmp_path / "card.key")
    result = check_card_key(config, f"{tmp_path / 'card.key'}: cannot read: Permission denied")
    assert result.status == FAIL and "chown fabpass" in result.fix


def test_doctor_lists_the_card_key_only_with_secure_cards(tmp_path: Path) -> None:
    healthy = Probes(spidevs=lambda: ["/dev/spidev0.0"], reader=lambda c: 0x92,
                     relay=lambda c: RelaySeen(held_off=True),
                     user_groups=lambda: ("fabpass", {"gpio", "spi"}, {"gpio", "spi"}),
                     clock=lambda: (True, "timedatectl"), broker=lambda c: (None, "mqtt://127.0.0.1:1883"),
                     card_key=lambda c: "card.key: readable by others; chmod 600 card.key")
    checks = [r.check for r in diagnose(config_for(tmp_path, tmp_path / "card.key"), healthy)]
    assert checks == ["spi", "reader", "card key", "relay", "groups", "clock", "broker"]
    plain = parse(secure_text(tmp_path).replace('secure = "ntag424"\n', "").replace(
        f'card_key_file = "{tmp_path / "card.key"}"\n', ""))
    assert "card key" not in [r.check for r in diagnose(plain, healthy)]
