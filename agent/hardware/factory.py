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
    `fabpass cards provision` while no agent holds the reader.

    The MFRC522 backend needs a transceive of its own for this (timer-aware, the
    chip's CRC, the whole 64-byte FIFO), which is not in this version yet.
    """
    raise CardPortUnavailable(
        f"the {config.type} reader of this fabpass version cannot yet carry ISO 14443-4 frames to a card "
        "(it needs a timer-aware transceive with the chip's CRC and its whole FIFO): cards cannot be "
        "provisioned on it")
