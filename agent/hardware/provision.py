"""Provisioning a card for the lab (`fabpass cards provision`): its key `card_key_no`
becomes its diversified key, so that it passes a secure tap on every machine.

With the card selected on the reader: authenticate with key 0 (the card's
master key, by default the factory's all-zero key), ChangeKey `card_key_no`
from its old key to diversify(master, UID), then check the result as a
machine would (a secure tap). A card that already holds its diversified key
is left alone. Key 0 itself is not changed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.hardware.cardkeys import diversify
from agent.hardware.isodep import IsoDep, IsoDepError, Transceiver
from agent.hardware.ntag424 import CardError, NotGenuine, Ntag424
from agent.hardware.securecard import ISO14443_4, UID_BYTES

BUDGET = 3.0  # seconds for the whole provisioning of one card: three authentications
FACTORY_KEY = bytes(16)


class ProvisionError(Exception):
    """The card was not provisioned; the message says why (and no key)."""


@dataclass(frozen=True)
class Provisioned:
    uid: bytes
    already: bool  # it held its diversified key before: nothing was changed


def provision(port: Transceiver, uid: bytes, sak: int, master: bytes, key_no: int,
              key0: bytes = FACTORY_KEY, old_key: bytes | None = None, old_master: bytes | None = None,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
              random: Callable[[int], bytes] = os.urandom) -> Provisioned:
    """Provision the card just selected (its UID and SAK from anticollision). Its key
    `key_no` is now `old_key`, or the diversification of `old_master` (a lab
    rotating its master key), or the factory's all-zero key."""
    if not sak & ISO14443_4 or len(uid) != UID_BYTES:
        raise ProvisionError(f"not an NTAG 424 DNA (SAK {sak:02X}, a {len(uid)}-byte UID)")
    new_key = diversify(master, uid)
    if old_master is not None:
        old_key = diversify(old_master, uid)
    link = IsoDep(port, BUDGET, clock, sleep)
    try:
        link.activate()
        card = Ntag424(link.exchange, random)
        card.select_application()
        if _holds(card, key_no, new_key, uid):
            return Provisioned(uid, already=True)
        try:
            channel = card.authenticate(0, key0)
        except (CardError, NotGenuine) as err:
            raise ProvisionError(f"the card's key 0 is not the one given (--key0, default all zero): {err}") from None
        try:
            card.change_key(channel, key_no, new_key, old_key if old_key is not None else FACTORY_KEY)
        except (CardError, NotGenuine) as err:
            raise ProvisionError(f"key {key_no} was not changed: its old key is not the one given "
                                 f"(--old-key or --old-key-file; default all zero): {err}") from None
        if not _holds(card, key_no, new_key, uid):
            raise ProvisionError(f"key {key_no} was changed, but the card does not pass a secure tap with it")
        return Provisioned(uid, already=False)
    except (IsoDepError, CardError, NotGenuine) as err:
        raise ProvisionError(f"the card stopped answering as an NTAG 424 DNA: {err}") from None
    finally:
        with contextlib.suppress(IsoDepError):
            link.deselect()


def _holds(card: Ntag424, key_no: int, key: bytes, uid: bytes) -> bool:
    """Whether the card proves it holds `key` as key `key_no` and names `uid` (a secure tap)."""
    try:
        channel = card.authenticate(key_no, key)
    except (CardError, NotGenuine):
        return False
    return card.get_card_uid(channel) == uid
