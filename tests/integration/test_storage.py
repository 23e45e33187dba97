"""The machine's storage opened without its agent, as `fabpass members check|import` do."""

from __future__ import annotations

import datetime as dt

from agent.config import parse
from agent.core.model import Instant
from agent.core.session import State
from agent.daemon.storage import Storage
from agent.members.snapshot import load_json
from tests.support.agents import ADA, GRACE, config_text, members_json

NOW = Instant(dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc), 1000.0)


def test_storage_check_on_a_machine_that_never_ran_creates_nothing(tmp_path) -> None:
    directory = tmp_path / "state"
    storage = Storage(parse(config_text(directory)), create=False)
    try:
        assert storage.check(ADA, State(), NOW, True) == {"granted": False, "reason": "unknown_badge",
                                                          "member_id": None}
        assert storage.list_age(NOW.wall) is None
    finally:
        storage.close()
    assert not directory.exists()


def test_storage_a_list_without_an_age_is_stale_where_an_age_is_required(tmp_path) -> None:
    text = config_text(tmp_path / "state", extra='[members]\nmax_list_age = "1h"\n')
    writer = Storage(parse(text))
    assert writer.import_list(lambda: load_json(members_json()), NOW.wall).applied
    writer.outbox.close()
    (tmp_path / "state" / "agent.db").unlink()  # the list is cached, its age is not known
    for suffix in ("-wal", "-shm"):
        (tmp_path / "state" / f"agent.db{suffix}").unlink(missing_ok=True)
    writer.cache.close()
    reader = Storage(parse(text), create=False)
    try:
        assert reader.check(ADA, State(), NOW, True)["reason"] == "stale_member_list"
        assert reader.check(GRACE, State(), NOW, True)["granted"], "staff may use a stale list"
    finally:
        reader.close()
