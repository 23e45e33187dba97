"""NTAG 424 DNA secure messaging, checked byte for byte against NXP AN12196.

Where each vector comes from (the application note's own examples, as
published in open code):
- AuthenticateEV2First with key 0 (AN12196 §6.6) and a second one
  (§6.10), CommMode.MAC (§5.3), CommMode.Full command data (§6.12), and
  GetCardUID with a Full-mode answer (§7.3): icedevml/nfc-ev2-crypto,
  test_ev2.py (test_auth1, test_auth2, test_mac1, test_full2, test_full3).
- ChangeKey of key 2 while authenticated with key 0 (case 1, AN12196 rev. 2.0
  §5.16.1 Table 25) and of key 0 itself (case 2, Table 26): Amperstrand/ntag424,
  ntag424-core/src/commands/change_key.rs (change_key_case1_an12196_vector,
  change_key_case2_an12196_vector).
"""

from __future__ import annotations

from collections import deque

import pytest

from agent.hardware.ntag424 import (
    NDEF_APPLICATION,
    CardError,
    NotGenuine,
    Ntag424,
    SecureChannel,
    session_keys,
)

H = bytes.fromhex
ZERO = bytes(16)


class Script:
    """A card that expects exactly these command APDUs and gives these answers."""

    def __init__(self, *pairs: tuple[bytes, bytes]) -> None:
        self.pairs = deque(pairs)

    def __call__(self, apdu: bytes) -> bytes:
        assert self.pairs, f"an APDU the card did not expect: {apdu.hex().upper()}"
        expected, answer = self.pairs.popleft()
        assert apdu.hex().upper() == expected.hex().upper()
        return answer

    def done(self) -> bool:
        return not self.pairs


def fixed(rnd_a: bytes):
    return lambda n: rnd_a[:n]


def test_ntag424_select_is_the_ndef_application() -> None:
    assert NDEF_APPLICATION == H("00A4040C07D276000085010100")
    card = Script((NDEF_APPLICATION, H("9000")))
    Ntag424(card).select_application()
    assert card.done()


def test_ntag424_select_refused_is_a_card_error() -> None:
    with pytest.raises(CardError, match="6A82"):
        Ntag424(Script((NDEF_APPLICATION, H("6A82")))).select_application()


@pytest.mark.parametrize("rnd_a, part1, apdu2, part2, ti, enc, mac", [
    (  # AN12196 §6.6
        "13C5DB8A5930439FC3DEF9A4C675360F", "A04C124213C186F22399D33AC2A30215",
        "35C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D",
        "3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663",
        "9D00C4DF", "1309C877509E5A215007FF0ED19CA564", "4C6626F5E72EA694202139295C7A7FC7"),
    (  # AN12196 §6.10
        "B98F4C50CF1C2E084FD150E33992B048", "B875CEB0E66A6C5CD00898DC371F92D1",
        "FF0306E47DFBC50087C4D8A78E88E62DE1E8BE457AA477C707E2F0874916A8B1",
        "0CC9A8094A8EEA683ECAAC5C7BF20584206D0608D477110FC6B3D5D3F65C3A6A",
        "7614281A", "7A93D6571E4B180FCA6AC90C9A7488D4", "FC4AF159B62E549B5812394CAB1918CC"),
])
def test_ntag424_authenticate_ev2_first_matches_an12196(rnd_a, part1, apdu2, part2, ti, enc, mac) -> None:
    card = Script((H("9071000002000000"), H(part1 + "91AF")),
                  (H("90AF000020" + apdu2 + "00"), H(part2 + "9100")))
    channel = Ntag424(card, random=fixed(H(rnd_a))).authenticate(0, ZERO)
    assert card.done()
    assert (channel.ti, channel.enc_key, channel.mac_key, channel.counter) == (H(ti), H(enc), H(mac), 0)


def test_ntag424_session_keys_follow_the_datasheet_sv1_sv2() -> None:
    # The RndB of AN12196 §6.6 is the decryption of its part-1 answer under the zero key.
    rnd_b = H("B9E2FC789B64BF237CCCAA20EC7E6E48")
    enc, mac = session_keys(ZERO, H("13C5DB8A5930439FC3DEF9A4C675360F"), rnd_b)
    assert (enc, mac) == (H("1309C877509E5A215007FF0ED19CA564"), H("4C6626F5E72EA694202139295C7A7FC7"))


def test_ntag424_authentication_refused_by_the_card_is_not_genuine() -> None:
    """A wrong key: the card cannot find its RndB in part 2 and answers 91AE."""
    sent: list[bytes] = []

    def exchange(apdu: bytes) -> bytes:
        sent.append(apdu)
        return H("A04C124213C186F22399D33AC2A3021591AF") if len(sent) == 1 else H("91AE")

    with pytest.raises(CardError, match="91AE.*authentication error"):
        Ntag424(exchange).authenticate(2, ZERO)
    assert sent[0] == H("9071000002020000") and len(sent[1]) == 38


def test_ntag424_a_card_without_the_key_fails_on_rnd_a() -> None:
    """A clone that frames perfectly but has no key can only answer part 2 with bytes
    that do not decrypt to our RndA rotated: refused without trusting anything it said."""
    answers = deque([H("A04C124213C186F22399D33AC2A30215" + "91AF"), bytes(range(32)) + H("9100")])
    with pytest.raises(NotGenuine, match="RndA"):
        Ntag424(lambda apdu: answers.popleft(), random=fixed(H("13C5DB8A5930439FC3DEF9A4C675360F"))).authenticate(0, ZERO)


@pytest.mark.parametrize("answer", ["91AF", "A04C124213C186F22399D33AC2A302" + "91AF", "9100", ""])
def test_ntag424_malformed_part1_answers_are_refused(answer: str) -> None:
    with pytest.raises((NotGenuine, CardError)):
        Ntag424(lambda apdu: H(answer)).authenticate(0, ZERO)


def test_ntag424_command_mac_matches_an12196_commmode_mac() -> None:
    """AN12196 §5.3: GetFileSettings(02) in CommMode.MAC."""
    channel = SecureChannel(H("7A21085E"), ZERO, H("8248134A386E86EB7FAF54A52E536CB6"))
    assert channel.command_mac(0xF5, H("02")) == H("6597A457C8CD442C")


def test_ntag424_full_mode_command_matches_an12196() -> None:
    """AN12196 §6.12: WriteData in CommMode.Full: IVc, padding, encryption, MAC; then the answer's MAC."""
    channel = SecureChannel(H("7614281A"), H("7A93D6571E4B180FCA6AC90C9A7488D4"), H("FC4AF159B62E549B5812394CAB1918CC"))
    encrypted = channel.encrypt(H("0102030405060708090A"))
    assert encrypted == H("6B5E6804909962FC4E3FF5522CF0F843")
    assert channel.command_mac(0x8D, H("030000000A0000"), encrypted) == H("6C0C53315B9C73AA")
    channel.check_answer(H("C26D236E4A7C046D9100"))
    assert channel.counter == 1


def test_ntag424_get_card_uid_matches_an12196_full_mode() -> None:
    """AN12196 §7.3: GetCardUID with its command MAC, a Full-mode answer decrypted and its MAC checked."""
    channel = SecureChannel(H("DF055522"), H("2B4D963C014DC36F24F69A50A394F875"), H("379D32130CE61705DD5FD8C36B95D764"))
    card = Script((H("90510000088E2C155ADDA99BE300"), H("70756055688505B52A5E26E59E329CD6595F672298EA41B79100")))
    assert Ntag424(card).get_card_uid(channel) == H("04958CAA5C5E80")
    assert card.done() and channel.counter == 1


@pytest.mark.parametrize("answer, why", [
    ("70756055688505B52A5E26E59E329CD6595F672298EA41B69100", "MAC"),  # one bit of the MAC
    ("70756055688505B52A5E26E59E329CD7595F672298EA41B79100", "MAC"),  # one bit of the data
    ("595F6722989100", "length"),  # no room for a MAC
    ("919D", "919D"),
])
def test_ntag424_get_card_uid_answers_that_do_not_check_out_are_refused(answer: str, why: str) -> None:
    channel = SecureChannel(H("DF055522"), H("2B4D963C014DC36F24F69A50A394F875"), H("379D32130CE61705DD5FD8C36B95D764"))
    with pytest.raises((NotGenuine, CardError), match=why):
        Ntag424(lambda apdu: H(answer)).get_card_uid(channel)


def test_ntag424_change_key_case1_matches_an12196_table_25() -> None:
    channel = SecureChannel(H("7614281A"), H("4CF3CB41A22583A61E89B158D252FC53"), H("5529860B2FC5FB6154B7F28361D30BF9"),
                            counter=2)
    card = Script((H("90C4000029022CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC75D0CE20BCD1D06E600"),
                   H("203BB55D1089D5879100")))
    Ntag424(card).change_key(channel, 2, H("F3847D627727ED3BC9C4CC050489B966"), ZERO, version=1)
    assert card.done() and channel.counter == 3


def test_ntag424_change_key_case2_matches_an12196_table_26() -> None:
    channel = SecureChannel(H("7614281A"), H("4CF3CB41A22583A61E89B158D252FC53"), H("5529860B2FC5FB6154B7F28361D30BF9"),
                            counter=3)
    card = Script((H("90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FDA6610234BDED643200"),
                   H("9100")))
    Ntag424(card).change_key(channel, 0, H("5004BF991F408672B1EF00F08F9E8647"), ZERO, version=1)
    assert card.done() and channel.counter == 4


def test_ntag424_change_key_with_the_wrong_old_key_is_the_cards_integrity_error() -> None:
    channel = SecureChannel(H("7614281A"), H("4CF3CB41A22583A61E89B158D252FC53"), H("5529860B2FC5FB6154B7F28361D30BF9"))
    with pytest.raises(CardError, match="911E.*integrity"):
        Ntag424(lambda apdu: H("911E")).change_key(channel, 2, H("F3847D627727ED3BC9C4CC050489B966"), ZERO)
