"""`fabpass run` with secure cards, as systemd starts it: a key file others may read
stops it at start, exit 2, with one message naming the file and never the key."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.cards import MASTER, key_file, secure_text


def test_secure_cards_run_refuses_a_key_file_others_may_read(tmp_path):
    key = key_file(tmp_path, mode=0o644)
    config = tmp_path / "agent.toml"
    config.write_text(secure_text(tmp_path, key))
    done = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"})
    assert done.returncode == 2, done.stderr
    assert f"{config}: reader.card_key_file: {key}: readable by others; chmod 600 {key}" in done.stderr
    assert MASTER.hex() not in (done.stdout + done.stderr).lower()
