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
        assert storage.check(ADA, State(), NOW, True) == {"granted": False, "action": "refused",
                                                          "reason": "unknown_badge", "member_id": None}
        assert storage.list_age(NOW.wall) is None
    finally:
        storage.close()
    assert not directory.exists()


def test_storage_a_list_without_an_age_is_stale_where_an_age_is_required(tmp_path) -> None:
    """The age is the list's own (its generated_at, kept in the cache): one without it has
    none, whoever opens the storage."""
    text = config_text(tmp_path / "state", extra='[members]\nmax_list_age = "1h"\n')
    writer = Storage(parse(text))
    undated = members_json().replace(b'"2026-11-25T08:00:00Z"', b"null")
    assert writer.import_list(lambda: load_json(undated), NOW.wall).applied
    writer.close()
    reader = Storage(parse(text), create=False)
    try:
        assert reader.list_age(NOW.wall) is None
        assert reader.check(ADA, State(), NOW, True)["reason"] == "stale_member_list"
        assert reader.check(GRACE, State(), NOW, True)["granted"], "staff may use a stale list"
    finally:
        reader.close()


def test_storage_the_age_is_the_lists_own_even_without_the_outbox(tmp_path) -> None:
    text = config_text(tmp_path / "state", extra='[members]\nmax_list_age = "1h"\n')
    writer = Storage(parse(text))
    assert writer.import_list(lambda: load_json(members_json()), NOW.wall).applied  # made at 08:00
    writer.close()
    for name in ("agent.db", "agent.db-wal", "agent.db-shm"):
        (tmp_path / "state" / name).unlink(missing_ok=True)
    reader = Storage(parse(text), create=False)
    try:
        assert reader.list_age(NOW.wall) == 3600
        assert reader.check(ADA, State(), NOW, True)["granted"]
        assert reader.check(ADA, State(), NOW, False)["reason"] == "stale_member_list", "judged by no clock"
    finally:
        reader.close()


def test_storage_a_spreadsheet_imported_without_a_version_follows_a_csv_one(tmp_path) -> None:
    """CSV and XLSX lists without --version take the same next version: an XLSX after a
    CSV was refused as not newer (seconds against milliseconds)."""
    from tests.unit.test_table import workbook

    header = ("id", "name", "badges", "status", "expires", "roles", "inductions")
    csv = tmp_path / "members.csv"
    csv.write_text(",".join(header) + f"\nm-1,Ada,{ADA},active,,,laser\n", encoding="utf-8")
    xlsx = tmp_path / "members.xlsx"
    xlsx.write_bytes(workbook(header, ("m-1", "Ada", ADA, "active", None, None, "laser"),
                              ("m-2", "Grace", GRACE, "active", None, None, "laser")))
    storage = Storage(parse(config_text(tmp_path / "state")))
    try:
        first = storage.import_file(csv, None, NOW.wall)
        second = storage.import_file(xlsx, None, NOW.wall + dt.timedelta(minutes=1))
        assert first.applied and second.applied, second.as_dict()
        assert storage.cache.version > first.as_dict()["version"] and storage.cache.info().count == 2
    finally:
        storage.close()
