"""What the tests share: helpers, running agents and a logbook, emulated devices."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
