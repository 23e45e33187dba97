"""agent.daemon.outbox.Outbox on real SQLite files: seq and incarnation, atomic commits, the
archived mark and what it lets go, keep, the bound."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import threading
import uuid

import pytest

from agent.daemon.outbox import TIDY_EVENTS, TIDY_S, Outbox, StorageError

NOW = dt.datetime(2026, 11, 25, 9, 0, 0, 123456, tzinfo=dt.timezone.utc)
STARTED = ("session_started", {"member_id": "m-1", "badge": "04A1B2C3"})
ENDED = ("session_ended", {"member_id": "m-1", "duration_s": 1.5, "reason": "badge_off"})
DENIED = ("access_denied", {"badge": "04A1B2C3", "reason": "in_use"})
LOCKED = ("machine_locked", {"by": "tech", "reason": "r"})


@pytest.fixture
def box(tmp_path):
    outbox = Outbox(tmp_path / "agent.db", "laser-1")
    yield outbox
    outbox.close()


def seqs(outbox: Outbox) -> list[int]:
    return [seq for seq, _ in outbox.pending()]


def test_outbox_first_event_is_seq_1(box):
    assert box.last_seq == 0 and box.depth == 0 and box.pending() == []
    events = box.commit([STARTED], NOW)
    assert len(events) == 1
    event = events[0]
    assert event["seq"] == 1 and event["v"] == 1 and event["type"] == "session_started"
    assert event["machine"] == "laser-1" and event["ts"] == "2026-11-25T09:00:00.123Z"
    assert event["incarnation"] == box.incarnation
    assert event["member_id"] == "m-1" and event["badge"] == "04A1B2C3"
    assert uuid.UUID(event["event_id"]).version == 4
    assert box.last_seq == 1 and box.depth == 1


def test_outbox_pending_payload_is_the_published_event(box):
    events = box.commit([STARTED, ENDED], NOW)
    pending = box.pending()
    assert [seq for seq, _ in pending] == [1, 2]
    assert [json.loads(payload) for _, payload in pending] == events


def test_outbox_ts_in_utc(box):
    local = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert box.commit([LOCKED], local)[0]["ts"] == "2026-11-25T09:00:00.000Z"


def test_outbox_seq_grows_by_one_per_event_across_commits(box):
    box.commit([STARTED], NOW)
    box.commit([ENDED, LOCKED], NOW)
    box.commit([DENIED], NOW)
    assert seqs(box) == [1, 2, 3, 4] and box.last_seq == 4


def test_outbox_event_ids_unique(box):
    events = [e for _ in range(50) for e in box.commit([DENIED, DENIED], NOW)]
    assert len({e["event_id"] for e in events}) == 100


def test_outbox_seq_never_reused_after_everything_is_archived(box):
    box.commit([STARTED, ENDED, LOCKED], NOW)
    assert box.archived(3) and box.tidy(0.0, force=True) == 3
    assert box.depth == 0 and box.pending() == []
    assert box.commit([DENIED], NOW)[0]["seq"] == 4
    assert box.last_seq == 4


def test_outbox_reopened_file_continues_seq_and_incarnation(tmp_path):
    path = tmp_path / "agent.db"
    first = Outbox(path, "laser-1")
    first.commit([STARTED, ENDED], NOW)
    first.archived(2)
    first.tidy(0.0, force=True)
    incarnation = first.incarnation
    first.close()
    again = Outbox(path, "laser-1")
    assert again.last_seq == 2 and again.mark == 2 and again.incarnation == incarnation
    assert again.commit([LOCKED], NOW)[0]["seq"] == 3
    again.close()


def test_outbox_a_new_storage_is_a_new_incarnation(tmp_path):
    """64 random bits made when the storage is first created: a wiped card counts from 1 again."""
    first, second = Outbox(tmp_path / "a.db", "laser-1"), Outbox(tmp_path / "b.db", "laser-1")
    try:
        assert re.fullmatch("[0-9a-f]{16}", first.incarnation) and first.incarnation != second.incarnation
        assert first.commit([LOCKED], NOW)[0]["seq"] == second.commit([LOCKED], NOW)[0]["seq"] == 1
    finally:
        first.close()
        second.close()


def test_outbox_reopened_file_keeps_what_the_logbook_has_not_archived(tmp_path):
    path = tmp_path / "agent.db"
    first = Outbox(path, "laser-1")
    events = first.commit([STARTED, ENDED, LOCKED], NOW)
    first.acknowledged(3)  # the broker took them all: that alone forgets nothing
    first.archived(1)
    first.tidy(0.0, force=True)
    first.close()
    again = Outbox(path, "laser-1")
    assert [json.loads(p) for _, p in again.pending()] == events[1:]
    assert (again.mark, again.unarchived, again.unacknowledged, again.kept_from) == (1, 2, 2, 2)
    again.close()


def test_outbox_written_by_an_older_agent_keeps_its_events_and_counter(tmp_path):
    """An outbox of the first layout (events with an event_id column) is migrated in place."""
    path = tmp_path / "agent.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE migrations (id INTEGER PRIMARY KEY, applied TEXT);
        INSERT INTO migrations VALUES (1, '2026-01-01T00:00:00.000Z'), (2, '2026-01-01T00:00:00.000Z');
        CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO events VALUES (6, 'id-6', '{"seq":6}'), (7, 'id-7', '{"seq":7}');
        INSERT INTO meta VALUES ('last_seq', '7'), ('locked', 'true');
    """)
    old.close()
    box = Outbox(path, "laser-1")
    assert box.pending() == [(6, '{"seq":6}'), (7, '{"seq":7}')]
    assert box.last_seq == 7 and box.get("locked") is True
    assert box.incarnation == "", "its events were archived under the empty incarnation: its seq goes on"
    assert box.commit([LOCKED], NOW)[0]["seq"] == 8
    box.close()
    check = sqlite3.connect(path)
    assert [row[1] for row in check.execute("PRAGMA table_info(events)")] == ["seq", "payload"]
    assert [row[0] for row in check.execute("SELECT id FROM migrations ORDER BY id")] == [1, 2, 3, 4]
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()


def test_outbox_marks_go_forward_only_and_count_what_is_left(box):
    assert (box.mark, box.unarchived, box.kept_from) == (None, None, 1), "no logbook yet"
    box.commit([STARTED, ENDED, LOCKED, DENIED], NOW)
    assert (box.unacknowledged, box.unarchived, box.kept_from) == (4, None, 1)
    box.acknowledged(3)
    assert box.unacknowledged == 1
    assert box.archived(2) and not box.archived(2) and not box.archived(1)
    assert (box.mark, box.unarchived, box.kept_from, box.depth) == (2, 2, 3, 4), "deleted later, many at once"
    box.archived(4)
    assert (box.unarchived, box.unacknowledged, box.kept_from) == (0, 0, 5)


def test_outbox_covered_events_go_with_the_next_event_in_the_same_transaction(box):
    """No transaction of its own for a mark: the next commit deletes what it covers."""
    box.commit([STARTED, ENDED], NOW)
    box.archived(2)
    changes = box._conn().total_changes
    box.commit([LOCKED], NOW)
    assert seqs(box) == [3] and box.get("archived_seq") == 2
    assert box._conn().total_changes - changes == 2 + 2 + 1, "2 deletes, 2 meta rows, 1 insert"


def test_outbox_tidy_writes_only_after_a_quiet_hour_or_many_covered(box):
    box.commit([LOCKED] * 3, NOW)
    box.archived(3)
    assert box.tidy(100.0) == 0 and box.tidy(100.0 + TIDY_S - 1) == 0 and box.depth == 3
    assert box.tidy(100.0 + TIDY_S) == 3 and box.depth == 0
    box.commit([LOCKED] * TIDY_EVENTS, NOW)
    box.archived(3 + TIDY_EVENTS)
    assert box.tidy(0.0) == TIDY_EVENTS, "many covered: at once"


def test_outbox_prune_deletes_what_is_older_than_keep_archived_or_not(box):
    box.commit([LOCKED, LOCKED], NOW - dt.timedelta(days=31))
    box.commit([LOCKED], NOW)
    box.archived(1)
    assert box.prune(NOW - dt.timedelta(days=30)) == 1, "seq 2: never confirmed, gone"
    assert seqs(box) == [3] and box.kept_from == 3


def test_outbox_pending_after_and_limit(box):
    box.commit([DENIED] * 10, NOW)
    assert [s for s, _ in box.pending(after_seq=3, limit=4)] == [4, 5, 6, 7]
    assert box.pending(after_seq=10) == []


def test_outbox_meta_written_with_events(box):
    box.commit([LOCKED], NOW, {"locked": True, "session": None})
    assert box.get("locked") is True and box.get("session") is None
    assert box.get("missing", "default") == "default"
    box.commit([], NOW, {"session": {"member_id": "m-1"}})
    assert box.get("session") == {"member_id": "m-1"}
    assert box.last_seq == 1  # meta alone makes no event


def test_outbox_meta_survives_reopen(tmp_path):
    first = Outbox(tmp_path / "agent.db", "laser-1")
    first.commit([], NOW, {"locked": True})
    first.close()
    again = Outbox(tmp_path / "agent.db", "laser-1")
    assert again.get("locked") is True
    again.close()


def test_outbox_commit_all_or_nothing(box):
    box.commit([STARTED], NOW, {"locked": False})
    with pytest.raises(TypeError):
        box.commit([ENDED, ("session_ended", {"bad": object()})], NOW, {"locked": True})
    assert seqs(box) == [1] and box.last_seq == 1 and box.get("locked") is False
    with pytest.raises(TypeError):
        box.commit([ENDED], NOW, {"locked": True, "bad": object()})
    assert seqs(box) == [1] and box.last_seq == 1 and box.get("locked") is False
    assert box.commit([ENDED], NOW)[0]["seq"] == 2


def test_outbox_full_disk_raises_storage_error_and_writes_nothing(box):
    box.commit([STARTED], NOW, {"locked": False})
    conn = box._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full: not one more page
    big = ("session_ended", {"member_id": "m-1", "note": "x" * 200_000})
    with pytest.raises(StorageError, match="cannot write the outbox"):
        box.commit([big], NOW, {"locked": True})
    assert seqs(box) == [1] and box.last_seq == 1 and box.get("locked") is False
    conn.execute("PRAGMA max_page_count = 1073741823")  # space again
    assert box.commit([ENDED], NOW)[0]["seq"] == 2


def test_outbox_full_disk_error_names_the_cause(box):
    # SQLite rolls the transaction back by itself on SQLITE_FULL; outbox.py line 102 then runs
    # ROLLBACK unconditionally, which fails with "cannot rollback - no transaction is active",
    # and that second error becomes the StorageError's message: the log never says the disk is full.
    conn = box._conn()
    box.commit([STARTED], NOW)
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StorageError) as info:
        box.commit([("session_ended", {"note": "x" * 200_000})], NOW)
    cause = str(info.value).removeprefix(f"cannot write the outbox {box.path}: ")
    assert "full" in cause, cause


def test_outbox_failing_database_raises_storage_error(tmp_path):
    box = Outbox(tmp_path / "agent.db", "laser-1")
    box._conn().execute("DROP TABLE events")  # as good as a failing disk for commit's purpose
    with pytest.raises(StorageError):
        box.commit([STARTED], NOW)
    box.close()


# --- the bound ---------------------------------------------------------------------------------


@pytest.fixture
def full(tmp_path):
    outbox = Outbox(tmp_path / "agent.db", "laser-1", limit=3)
    outbox.commit([LOCKED, LOCKED, LOCKED], NOW)
    yield outbox
    outbox.close()


def test_outbox_at_bound_session_start_refused(full):
    with pytest.raises(StorageError, match="outbox full"):
        full.commit([STARTED], NOW, {"session": {"member_id": "m-1"}})
    assert full.depth == 3 and full.last_seq == 3 and full.get("session") is None


def test_outbox_at_bound_session_start_with_other_events_refused_whole(full):
    with pytest.raises(StorageError):
        full.commit([ENDED, STARTED], NOW)
    assert full.depth == 3 and full.last_seq == 3


def test_outbox_at_bound_refusal_dropped(full):
    assert full.commit([DENIED], NOW) == []
    assert full.dropped == 1 and full.depth == 3 and full.last_seq == 3


@pytest.mark.parametrize("record", [ENDED, LOCKED, ("machine_unlocked", {"by": "t", "reason": ""}),
                                    ("members_updated", {"version": 2, "count": 10}),
                                    ("agent_stopped", {"agent_version": "0.1.0"})])
def test_outbox_at_bound_other_events_kept(full, record):
    events = full.commit([record], NOW)
    assert [e["type"] for e in events] == [record[0]] and events[0]["seq"] == 4
    assert full.depth == 4


def test_outbox_at_bound_mixed_keeps_all_but_refusals(full):
    events = full.commit([DENIED, ENDED, DENIED, LOCKED], NOW, {"locked": True})
    assert [(e["type"], e["seq"]) for e in events] == [("session_ended", 4), ("machine_locked", 5)]
    assert full.dropped == 2 and full.get("locked") is True


def test_outbox_below_bound_but_commit_would_cross_it(tmp_path):
    box = Outbox(tmp_path / "agent.db", "laser-1", limit=3)
    box.commit([LOCKED, LOCKED], NOW)
    with pytest.raises(StorageError):
        box.commit([STARTED, DENIED], NOW)  # 2 + 2 > 3
    assert box.commit([STARTED], NOW)[0]["seq"] == 3  # 2 + 1 fits
    box.close()


def test_outbox_bound_lifts_after_a_mark(full):
    with pytest.raises(StorageError):
        full.commit([STARTED], NOW)
    full.archived(1)
    assert full.commit([STARTED], NOW)[0]["seq"] == 4
    assert full.commit([DENIED], NOW) == []  # full again


def test_outbox_at_bound_what_the_broker_took_makes_room_first(full, caplog):
    """A logbook gone for long: the oldest events the broker has taken give way before any
    session is refused (the logbook may still have them; no one else has the rest)."""
    full.acknowledged(2)
    assert full.commit([STARTED], NOW)[0]["seq"] == 4
    assert seqs(full) == [2, 3, 4]
    assert "gave up the 1 oldest the broker took" in caplog.text


# --- concurrency ---------------------------------------------------------------------------------


def test_outbox_threads_get_distinct_contiguous_seqs(box):
    got: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(25):
            events = box.commit([DENIED, LOCKED], NOW)
            with lock:
                got.extend(e["seq"] for e in events)
        box.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 201))
    assert seqs(box) == list(range(1, 201))


def test_outbox_two_instances_on_one_file_share_the_counter(tmp_path):
    """The agent and `fabpass members import` may both write the same outbox."""
    agent, importer = Outbox(tmp_path / "agent.db", "laser-1"), Outbox(tmp_path / "agent.db", "laser-1")
    order = []
    for i in range(10):
        writer = agent if i % 2 else importer
        order += [e["seq"] for e in writer.commit([LOCKED], NOW)]
    assert order == list(range(1, 11))
    assert agent.last_seq == importer.last_seq == 10
    agent.close()
    importer.close()
