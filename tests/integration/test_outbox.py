"""agent.daemon.outbox.Outbox on real SQLite files: seq, atomic commits, acknowledge, the bound."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import uuid

import pytest

from agent.daemon.outbox import Outbox, StorageError

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


def test_outbox_seq_never_reused_after_acknowledge_all(box):
    box.commit([STARTED, ENDED, LOCKED], NOW)
    box.acknowledge([1, 2, 3])
    assert box.depth == 0 and box.pending() == []
    assert box.commit([DENIED], NOW)[0]["seq"] == 4
    assert box.last_seq == 4


def test_outbox_reopened_file_continues_seq(tmp_path):
    path = tmp_path / "agent.db"
    first = Outbox(path, "laser-1")
    first.commit([STARTED, ENDED], NOW)
    first.acknowledge([1, 2])
    first.close()
    again = Outbox(path, "laser-1")
    assert again.last_seq == 2
    assert again.commit([LOCKED], NOW)[0]["seq"] == 3
    again.close()


def test_outbox_reopened_file_keeps_unacknowledged_events(tmp_path):
    path = tmp_path / "agent.db"
    first = Outbox(path, "laser-1")
    events = first.commit([STARTED, ENDED, LOCKED], NOW)
    first.acknowledge([2])
    first.close()
    again = Outbox(path, "laser-1")
    assert [json.loads(p) for _, p in again.pending()] == [events[0], events[2]]
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
    assert box.commit([LOCKED], NOW)[0]["seq"] == 8
    box.close()
    check = sqlite3.connect(path)
    assert [row[1] for row in check.execute("PRAGMA table_info(events)")] == ["seq", "payload"]
    assert [row[0] for row in check.execute("SELECT id FROM migrations ORDER BY id")] == [1, 2, 3]
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()


def test_outbox_acknowledge_some_and_unknown(box):
    box.commit([STARTED, ENDED, LOCKED, DENIED], NOW)
    box.acknowledge([2, 4, 99])
    box.acknowledge([2])  # twice: harmless
    assert seqs(box) == [1, 3]


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


def test_outbox_bound_lifts_after_acknowledge(full):
    with pytest.raises(StorageError):
        full.commit([STARTED], NOW)
    full.acknowledge([1])
    assert full.commit([STARTED], NOW)[0]["seq"] == 4
    assert full.commit([DENIED], NOW) == []  # full again


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
