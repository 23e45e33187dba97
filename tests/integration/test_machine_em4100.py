"""EM4100 cards listed by the numbers printed on them, read by a real RDM6300 backend on a
pseudo-terminal, through the whole agent: CSV import, cache, session machine, mock relay pin."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ReaderConfig
from agent.hardware.rdm6300 import RDM6300Reader
from agent.members.snapshot import load_file
from tests.support.agents import RunningAgent, config_text, read_events
from tests.support.helpers import wait_for
from tests.support.serialdevice import SerialDevice

# The card printed "0004567890" and "069,45906": its tag is 0x??0045B352 for any version byte.
LIST = ("id,name,badges,status,expires,roles,inductions\n"
        "m-1,Ada,em:0004567890,active,,,laser\n"
        'm-2,Grace,"em:070,00001",active,,,laser\n'
        "m-3,Alan,hex:0102030405,active,,,laser\n")


def frame(tag_hex: str) -> bytes:
    tag = bytes.fromhex(tag_hex)
    checksum = 0
    for byte in tag:
        checksum ^= byte
    return b"\x02" + tag_hex.encode() + b"%02X" % checksum + b"\x03"


@pytest.fixture
def em_agent(tmp_path: Path):
    device = SerialDevice(tmp_path / "ttyRDM")
    reader = RDM6300Reader(ReaderConfig(type="rdm6300", port=str(device.path), rearm=0.05))
    agent = RunningAgent(config_text(tmp_path / "state"), simulate=False, reader=reader)
    wait_for(lambda: reader.healthy and reader.detail is None, 5, "the reader to open its port")
    members = tmp_path / "members.csv"
    members.write_text(LIST)
    assert agent.agent.import_members(lambda: load_file(members, version=1))["applied"]
    yield agent, device
    agent.stop()
    device.close()


def started(agent: RunningAgent) -> list[tuple[str, str]]:
    return [(e["member_id"], e["badge"]) for e in read_events(agent.config.storage.dir)
            if e["type"] == "session_started"]


@pytest.mark.parametrize("tag, member", [
    ("0A0045B352", "m-1"),   # the printed DEZ10 number, with one version byte
    ("7F0045B352", "m-1"),   # and another
    ("0A12460001", "m-2"),   # facility 70 = 0x46, card 1: bits 0-23 only
    ("0102030405", "m-3"),   # listed in hex
])
def test_em4100_read_on_an_rdm6300_opens_the_session_of_the_member_listed_by_its_printed_number(
        em_agent, tag: str, member: str) -> None:
    agent, device = em_agent
    device.write(frame(tag))
    wait_for(lambda: started(agent), 5, "the session to start")
    assert started(agent) == [(member, tag)]  # events name the tag as read
    assert agent.relay_is_on()


def test_em4100_other_tags_are_unknown(em_agent) -> None:
    agent, device = em_agent
    device.write(frame("0A0045B353"))
    wait_for(lambda: any(e["type"] == "access_denied" for e in read_events(agent.config.storage.dir)), 5,
             "the refusal")
    denied = [e for e in read_events(agent.config.storage.dir) if e["type"] == "access_denied"]
    assert [(e["badge"], e["reason"]) for e in denied] == [("0A0045B353", "unknown_badge")]
    assert not agent.relay_is_on()


def test_em4100_printed_numbers_work_with_hashed_badges(tmp_path: Path) -> None:
    """With a site key the cache holds only hashes, of the printed numbers too; a read is
    hashed under each of its forms, and no UID or printed number is stored or reported."""
    key = tmp_path / "badge.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    members = tmp_path / "members.csv"
    members.write_text(LIST)
    agent = RunningAgent(config_text(tmp_path / "state", extra=f'[members]\nbadge_hash_key_file = "{key}"'))
    try:
        assert agent.agent.import_members(lambda: load_file(members, version=1))["applied"]
        assert agent.tap("0A0045B352")["member_id"] == "m-1"
        assert agent.tap("0A0045B352")["action"] == "ended"
        assert agent.tap("0A12460001")["member_id"] == "m-2"
        stored = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir() if p.is_file())
        for secret in (b"0A0045B352", b"0004567890", b"069,45906", b"070,00001"):
            assert secret not in stored
    finally:
        agent.stop()
