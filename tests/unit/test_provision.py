"""Provisioning a card for the lab: its key `card_key_no` becomes its diversified key,
changed with the card's key 0, then checked by a secure tap (emulated cards)."""

from __future__ import annotations

import pytest

from agent.devtools.emulated_ntag424 import KeylessClone, Ntag424, UidClone
from agent.hardware.cardkeys import diversify
from agent.hardware.provision import ProvisionError, provision
from agent.hardware.securecard import CardVerifier
from tests.support.card_field import CardField

MASTER = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
UID = bytes.fromhex("04A1B2C3D4E5F6")
ZERO = bytes(16)


def lay(card) -> tuple[CardField, tuple[bytes, int]]:
    field = CardField()
    field.place(card)
    found = field.select_card()
    assert found is not None
    return field, found


def run(card, key_no: int = 2, **options):
    field, (uid, sak) = lay(card)
    return provision(field, uid, sak, MASTER, key_no, clock=field.clock, sleep=field.sleep, **options)


def secure_tap(card, key_no: int = 2) -> bool:
    field, found = lay(card)
    return CardVerifier(MASTER, key_no, clock=field.clock, sleep=field.sleep).check(field, *found).authentic


def test_provision_a_factory_card() -> None:
    card = Ntag424(UID)
    assert not secure_tap(card)
    result = run(card)
    assert (result.uid, result.already) == (UID, False)
    assert card.application.keys[2] == diversify(MASTER, UID)
    assert card.application.keys[0] == ZERO  # key 0 is left as it was
    card.power(False)
    assert secure_tap(card)


def test_provision_with_key0_and_old_key_of_the_lab() -> None:
    key0, old = bytes(range(16)), bytes(range(16, 32))
    card = Ntag424(UID, {0: key0, 3: old})
    result = run(card, key_no=3, key0=key0, old_key=old)
    assert not result.already and card.application.keys[3] == diversify(MASTER, UID)


def test_provision_rotates_a_card_from_an_old_master_key() -> None:
    old_master = bytes(range(100, 116))
    card = Ntag424(UID, {2: diversify(old_master, UID)})
    run(card, old_master=old_master)
    assert card.application.keys[2] == diversify(MASTER, UID)


def test_provision_a_card_already_provisioned_is_left_alone() -> None:
    card = Ntag424(UID, {2: diversify(MASTER, UID)})
    result = run(card)
    assert result.already
    assert not any(apdu[1:2] == b"\xC4" for apdu in card.apdus)  # no ChangeKey


def test_provision_the_wrong_key0_changes_nothing() -> None:
    card = Ntag424(UID, {0: bytes(range(16))})
    with pytest.raises(ProvisionError, match="key 0.*--key0"):
        run(card)
    assert card.application.keys[2] == ZERO


def test_provision_the_wrong_old_key_changes_nothing() -> None:
    card = Ntag424(UID, {2: bytes(range(16))})
    with pytest.raises(ProvisionError, match="key 2.*old key"):
        run(card)
    assert card.application.keys[2] == bytes(range(16))


@pytest.mark.parametrize("card", [UidClone(UID), KeylessClone(UID)], ids=["uid-clone", "keyless-clone"])
def test_provision_refuses_what_is_not_an_ntag424(card) -> None:
    with pytest.raises(ProvisionError):
        run(card)


def test_provision_refuses_a_card_without_iso14443_4() -> None:
    field = CardField()
    with pytest.raises(ProvisionError, match="SAK 08"):
        provision(field, UID, 0x08, MASTER, 2, clock=field.clock, sleep=field.sleep)


def test_provision_a_card_pulled_before_the_change_is_unchanged() -> None:
    card = Ntag424(UID)
    field, (uid, sak) = lay(card)
    field.pull_after(5)  # RATS, select, a failed authentication (2 parts), key 0 part 1: gone at part 2
    with pytest.raises(ProvisionError, match="no answer"):
        provision(field, uid, sak, MASTER, 2, clock=field.clock, sleep=field.sleep)
    assert card.application.keys[2] == ZERO


def test_provision_key_0_itself() -> None:
    """card_key_no = 0: the card's key 0 becomes its diversified key (ChangeKey case 2)."""
    card = Ntag424(UID)
    run(card, key_no=0)
    assert card.application.keys[0] == diversify(MASTER, UID)
    card.power(False)
    assert secure_tap(card, key_no=0)
