"""Lists from the broker (agent.daemon.listsync.ListSync.take_published) on a real cache, outbox
and updater process: the retained list delivered again at a reconnect is confirmed without a new one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from agent.daemon.listsync import CONFIRMED_KEY, ListSync
from agent.daemon.outbox import Outbox
from agent.members.cache import FILENAME, MemberCache
from agent.members.update import Updated, update_cache_in_child
from tests.support.agents import members_json

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)


class Storage:
    """A machine's storage folder, and the updater runs it took."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cache = MemberCache(directory)
        self.outbox = Outbox(directory / "outbox.db", "laser-1")
        self.runs = 0

    def update(self, payload: bytes) -> Updated:
        self.runs += 1
        return update_cache_in_child(self.directory, payload)

    def deliver(self, payload: bytes, minutes: int = 0, settings: str = ""):
        return ListSync(self.outbox, self.cache).take_published(payload, self.update,
                                                                NOW + dt.timedelta(minutes=minutes), settings)

    def events(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.outbox.pending()]

    def close(self) -> None:
        self.cache.close()
        self.outbox.close()


@pytest.fixture
def storage(tmp_path):
    s = Storage(tmp_path)
    yield s
    s.close()


def test_listsync_same_list_again_is_confirmed_without_an_updater(storage):
    first = storage.deliver(members_json(version=5))
    assert first.applied and storage.runs == 1 and storage.cache.version == 5
    again = storage.deliver(members_json(version=5), minutes=10)
    assert not again.applied and again.version == 5 and again.error is None
    assert storage.runs == 1, "the same bytes started no updater process"
    assert storage.outbox.get(CONFIRMED_KEY) == (NOW + dt.timedelta(minutes=10)).timestamp()
    assert storage.events() == ["members_updated"], "a confirmation is no event"


def test_listsync_same_version_in_other_bytes_is_read_then_remembered(storage):
    storage.deliver(members_json(version=5))
    respaced = json.dumps(json.loads(members_json(version=5)), indent=2).encode()
    assert storage.deliver(respaced).error is None and storage.runs == 2  # read: only the version says "same"
    assert storage.deliver(respaced).error is None and storage.runs == 2  # now known byte for byte
    assert storage.events() == ["members_updated"]


def test_listsync_same_list_applied_again_when_the_cache_lost_it(storage):
    storage.deliver(members_json(version=5))
    storage.cache.close()
    (storage.directory / FILENAME).unlink()  # as a corrupt cache is moved aside at start
    storage.cache = MemberCache(storage.directory)
    again = storage.deliver(members_json(version=5))
    assert again.applied and storage.runs == 2 and storage.cache.version == 5


def test_listsync_same_list_read_again_under_other_settings(storage):
    storage.deliver(members_json(version=5), settings="key-a")
    storage.deliver(members_json(version=5), settings="key-b")  # a new signing or badge hash key
    assert storage.runs == 2


@pytest.mark.parametrize("bad", [members_json(version=4), b'{"v": 1, "version": 9, "members": [{]}'],
                         ids=["older", "broken"])
def test_listsync_a_refused_list_delivered_again_is_refused_without_an_updater(storage, bad):
    storage.deliver(members_json(version=5))
    first = storage.deliver(bad)
    assert first.error and storage.runs == 2
    again = storage.deliver(bad, minutes=10)
    assert (again.applied, again.version, again.error) == (False, first.version, first.error)
    assert storage.runs == 2, "the same refused bytes started no updater process"
    assert storage.events() == ["members_updated", "members_rejected"], "and were told once"
    assert storage.cache.version == 5


def test_listsync_a_refused_list_is_read_again_when_the_cache_changed(storage):
    storage.deliver(members_json(version=5))
    assert storage.deliver(members_json(version=4)).error  # not newer than 5
    storage.cache.close()
    (storage.directory / FILENAME).unlink()  # as a corrupt cache is moved aside at start
    storage.cache = MemberCache(storage.directory)
    assert storage.deliver(members_json(version=4)).applied and storage.runs == 3


def test_listsync_a_list_this_machine_could_not_write_is_tried_again(storage):
    blocker = storage.directory / (FILENAME + ".new")
    blocker.mkdir()  # where the updater writes the new cache: it cannot
    failed = storage.deliver(members_json(version=6))
    assert failed.error and not failed.applied and storage.cache.version is None
    blocker.rmdir()
    assert storage.deliver(members_json(version=6)).applied and storage.runs == 2
    assert storage.events() == ["members_rejected", "members_updated"]
