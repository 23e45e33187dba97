from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.devtools.localbroker import LocalBroker as Mosquitto


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator:
    """Start real mosquitto brokers; every one started is stopped at the end of the test."""
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: run the README's test command (it installs it)")
    started: list[Mosquitto] = []

    def start(extra_config: str = "", anonymous: bool = True) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(started)}"
        workdir.mkdir()
        broker = Mosquitto(workdir, extra_config, anonymous)
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory) -> Mosquitto:
    """A real mosquitto on a free loopback port, anonymous access allowed."""
    return mosquitto_factory()
