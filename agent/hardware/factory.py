"""Chooses real or simulated parts, as gpiozero chooses a pin factory.

Backends import their vendor libraries only when configured, so the package
imports on a laptop or in CI without any Pi library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from gpiozero import Factory
from gpiozero.pins.mock import MockFactory, MockPWMPin

from agent.config import ReaderConfig
from agent.hardware.reader import Reader

if TYPE_CHECKING:
    from agent.hardware.securecard import CardPort

BACKENDS = {
    "mfrc522": "agent.hardware.mfrc522:MFRC522Reader",
    "rdm6300": "agent.hardware.rdm6300:RDM6300Reader",
    "head": "agent.hardware.head:HeadReader",
    "simulated": "agent.hardware.simulated:SimulatedReader",
}


def pin_factory(simulate: bool) -> Factory | None:
    """MockFactory when simulating; otherwise None, leaving the choice to gpiozero
    (so GPIOZERO_PIN_FACTORY=mock gives mock pins with a real reader)."""
    return MockFactory(pin_class=MockPWMPin) if simulate else None


def make_reader(config: ReaderConfig, simulate: bool, pins: Factory | None = None) -> Reader:
    kind = "simulated" if simulate else config.type
    module_name, class_name = BACKENDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls() if kind == "simulated" else cls(config, pins)


# secure cards


class CardPortUnavailable(RuntimeError):
    """This reader cannot carry ISO 14443-4 frames to a card."""


def open_card_port(config: ReaderConfig) -> CardPort:
    """The reader as a card port (select a card, then carry its frames), for
    `fabpass cards provision` while no agent holds the reader: the MFRC522's,
    through its own transceive (agent.hardware.mfrc522chip)."""
    if config.type != "mfrc522":
        raise CardPortUnavailable(f"a {config.type} reader cannot carry ISO 14443-4 frames to a card: "
                                  "cards are provisioned on an mfrc522 reader")
    from agent.hardware.mfrc522 import MFRC522CardPort
    from agent.hardware.mfrc522chip import ReaderFault

    try:
        return MFRC522CardPort(config)
    except (ReaderFault, OSError, ImportError) as err:  # ImportError: no Pi packages, or no GPIO
        raise CardPortUnavailable(f"cannot open the mfrc522 reader: {err}") from None
