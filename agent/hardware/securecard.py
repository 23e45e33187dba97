"""Secure taps: a card proves it is one of the lab's NTAG 424 DNA before its UID counts.

With `[reader] secure = "ntag424"`, a card the reader has selected (ISO
14443-3, its UID from anticollision) is checked on the reader's own thread:

    RATS → ISOSelectFile of the NDEF application → AuthenticateEV2First with
    key `card_key_no` and the card's diversified key (agent.hardware.cardkeys)
    → GetCardUID (its command MAC, a Full-mode answer) equal to the
    anticollision UID → S(DESELECT)

Any failure (no ISO 14443-4, no answer to RATS, an authentication the card
refuses, a wrong MAC, another UID, time running out) makes the card not
authentic: the agent refuses it with `card_not_authentic`, unless the member
list names its badge `uid:` (accepted by UID alone). A check never takes the
reader's thread for longer than SECURE_BUDGET, so a slow or silent card
delays only that reader, never the agent's loop (which runs on its own thread).

A card held on the reader is one tap: the reader (agent.hardware.mfrc522)
checks a card when it arrives, not at every look.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.config import ReaderConfig
from agent.core.model import badge_from_bytes
from agent.hardware.cardkeys import diversify, load_master_key
from agent.hardware.isodep import IsoDep, IsoDepError, Transceiver
from agent.hardware.ntag424 import CardError, NotGenuine, Ntag424

SECURE_BUDGET = 0.5  # seconds a check may take: a genuine card needs 20 to 50 ms
ISO14443_4 = 0x20  # SAK bit 6: the card speaks ISO 14443-4
UID_BYTES = 7  # an NTAG 424 DNA's UID (a random ID, 4 bytes, cannot be checked)


class CardPort(Transceiver, Protocol):
    """A reader that selects a card (ISO 14443-3) and then carries frames to it."""

    def select_card(self) -> tuple[bytes, int] | None:
        """The UID and SAK of the card now selected (ACTIVE), or None when there is none."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class CardCheck:
    """A presented card: its badge (the UID as read) and whether it proved itself."""

    badge: str
    authentic: bool
    why: str = ""  # why not, for the log: never a key, never a UID


def check_key_file(config: ReaderConfig) -> None:
    """Read and check `[reader] card_key_file` (CardKeyError), as the agent does at start."""
    assert config.card_key_file is not None, "the config requires card_key_file with secure"
    load_master_key(config.card_key_file)


class CardVerifier:
    """Checks cards against the lab's master key (`card_key_no` of each card holds
    its diversification). `clock`, `sleep` and `random` are seams for tests."""

    def __init__(self, master: bytes, key_no: int, budget: float = SECURE_BUDGET,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self._master, self.key_no, self.budget = master, key_no, budget
        self._clock, self._sleep, self._random = clock, sleep, random
        # The AES and CMAC (the `cryptography` package, about 8 MB of RSS) are loaded now:
        # their import must not be taken from the first tap's time budget.
        importlib.import_module("cryptography.hazmat.primitives.cmac")

    def check(self, port: Transceiver, uid: bytes, sak: int) -> CardCheck:
        """Check the card just selected (UID and SAK from anticollision)."""
        badge = badge_from_bytes(uid)
        try:
            self._prove(port, uid, sak)
        except (IsoDepError, CardError, NotGenuine) as err:
            return CardCheck(badge, False, str(err))
        return CardCheck(badge, True)

    def _prove(self, port: Transceiver, uid: bytes, sak: int) -> None:
        if not sak & ISO14443_4:
            raise NotGenuine(f"SAK {sak:02X}: no ISO 14443-4 (a MIFARE Classic, an NTAG 21x, a UID clone)")
        if len(uid) != UID_BYTES:
            raise NotGenuine(f"a {len(uid)}-byte UID: an NTAG 424 DNA has {UID_BYTES} (random IDs cannot be checked)")
        link = IsoDep(port, self.budget, self._clock, self._sleep)
        link.activate()
        try:
            card = Ntag424(link.exchange, self._random)
            card.select_application()
            channel = card.authenticate(self.key_no, diversify(self._master, uid))
            if card.get_card_uid(channel) != uid:
                raise NotGenuine("GetCardUID names another card than anticollision did")
        finally:
            with contextlib.suppress(IsoDepError):
                link.deselect()
