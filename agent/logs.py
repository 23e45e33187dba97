"""Log lines a technician can read in journald: level, machine id, message; no secrets."""

from __future__ import annotations

import logging
import os
import sys


def setup(machine: str | None = None, verbose: bool = False) -> None:
    # Under systemd, journald stamps the time itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    where = f"[{machine}] " if machine else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{stamp}%(levelname)s {where}%(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("paho").setLevel(logging.WARNING)
