"""agent.members.cache.MemberCache on real SQLite files: atomic apply, versions, lookups, corruption."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest

from agent.core.model import Member
from agent.members.cache import (
    BATCH,
    FILENAME,
    ROWS,
    CacheInfo,
    MemberCache,
    VersionNotNewer,
)
from agent.members.snapshot import SnapshotError, load_csv, load_json


@dataclass
class Snap:
    """The smallest thing apply() takes: a version, a stamp, and members()."""

    version: int
    people: list[Member]
    generated_at: str | None = "2026-11-25T09:00:00Z"
    fail_after: int | None = None
    hook: Callable[[int], None] | None = None

    def members(self) -> Iterator[Member]:
        for index, member in enumerate(self.people):
            if self.fail_after is not None and index == self.fail_after:
                raise RuntimeError("bad member halfway through the list")
            if self.hook is not None:
                self.hook(index)
            yield member


def person(n: int, name: str = "", **kw) -> Member:
    return Member(id=f"m-{n:05d}", name=name or f"member {n}", status=kw.pop("status", "active"),
                  badges=kw.pop("badges", (f"{n:08X}",)), **kw)


ADA = Member(id="m-ada", name="Ada Lovelace", status="active", expires=dt.date(2027, 6, 30),
             roles=frozenset({"staff", "host"}), inductions={"laser": None, "cnc": dt.date(2027, 1, 31)},
             badges=("04A1B2C3D4E5F6", "04A1B2C3"))
BOB = Member(id="m-bob", name="Bob", status="suspended", badges=("0102030405",))


@pytest.fixture
def cache(tmp_path) -> Iterator[MemberCache]:
    c = MemberCache(tmp_path)
    yield c
    c.close()


def strip_badges(member: Member) -> Member:
    """Lookups return members without their badge list."""
    return Member(member.id, member.name, member.status, member.expires, member.roles, member.inductions)


# --- apply and lookup ---------------------------------------------------------------------------


def test_members_cache_empty_before_any_list(cache, tmp_path):
    assert cache.info() == CacheInfo(None, 0, None)
    assert cache.version is None
    assert cache.lookup("04A1B2C3") is None
    assert not (tmp_path / FILENAME).exists()
    cache.check_version(1)  # anything is newer than nothing


def test_members_cache_apply_and_lookup(cache, tmp_path):
    assert cache.replace(Snap(7, [ADA, BOB])) == 2
    assert cache.info() == CacheInfo(7, 2, "2026-11-25T09:00:00Z")
    found = cache.lookup("04A1B2C3")
    assert found == strip_badges(ADA)
    assert found.is_staff and found.inductions == {"laser": None, "cnc": dt.date(2027, 1, 31)}
    assert cache.lookup("04A1B2C3D4E5F6") == strip_badges(ADA)  # a second badge, the same member
    assert cache.lookup("0102030405").status == "suspended"
    assert cache.lookup("04FFFFFF") is None
    assert not (tmp_path / (FILENAME + ".new")).exists()


def test_members_cache_lookups_share_inductions_read_only(cache):
    twin = ADA._replace(id="m-twin", badges=("0A0B0C0D",))
    cache.replace(Snap(1, [ADA, twin]))
    ada, other = cache.lookup("04A1B2C3"), cache.lookup("0A0B0C0D")
    with pytest.raises(TypeError):
        ada.inductions["cnc"] = None  # would change every member with these inductions
    assert other.inductions == ada.inductions == {"laser": None, "cnc": dt.date(2027, 1, 31)}


def test_members_cache_member_without_badges_or_dates(cache):
    plain = Member(id="m-x", name="", status="active", badges=("0A0B0C0D",))
    cache.replace(Snap(1, [plain], generated_at=None))
    assert cache.lookup("0A0B0C0D") == strip_badges(plain)
    assert cache.info() == CacheInfo(1, 1, None)


def test_members_cache_apply_from_json_snapshot(cache):
    text = json.dumps({"v": 1, "version": 42, "generated_at": "2026-11-25T09:00:00Z", "members": [
        {"id": "m-0001", "name": "Ada Lovelace", "badges": ["04:a1:b2:c3:d4:e5:f6"], "status": "active",
         "expires": "2027-06-30", "roles": ["staff"], "inductions": {"laser": None, "cnc": "2027-01-31"}}]})
    assert cache.replace(load_json(text)) == 1
    ada = cache.lookup("04A1B2C3D4E5F6")
    assert ada.id == "m-0001" and ada.expires == dt.date(2027, 6, 30) and ada.is_staff
    assert ada.inductions == {"laser": None, "cnc": dt.date(2027, 1, 31)}
    assert cache.info().version == 42


def test_members_cache_apply_from_csv_snapshot(cache):
    text = ("id,name,badges,status,expires,roles,inductions\n"
            "m-1,Ada,04A1B2C3 04A1B2C3D4E5F6,active,2027-06-30,staff,laser cnc:2027-01-31\n"
            "m-2,Bob,hex:0102030405,suspended,,,\n")
    assert cache.replace(load_csv(text, version=1_700_000_000)) == 2
    assert cache.lookup("04A1B2C3D4E5F6").inductions == {"laser": None, "cnc": dt.date(2027, 1, 31)}
    assert cache.lookup("0102030405").status == "suspended"
    assert cache.info() == CacheInfo(1_700_000_000, 2, None)


def test_members_cache_empty_list(cache):
    cache.replace(Snap(1, [ADA]))
    assert cache.replace(Snap(2, [])) == 0
    assert cache.info().count == 0 and cache.lookup("04A1B2C3") is None


def test_members_cache_many_members_cross_batches(cache):
    people = [person(n) for n in range(2 * BATCH + 17)]
    assert cache.replace(Snap(1, people)) == len(people)
    assert cache.info().count == len(people)
    for n in (0, BATCH - 1, BATCH, 2 * BATCH + 16):
        assert cache.lookup(f"{n:08X}").id == f"m-{n:05d}"


def test_members_cache_badges_cross_statements_of_many_rows(cache):
    """Rows go in ROWS to a statement: members with 0 to 3 badges straddle every boundary."""
    people = [person(n, badges=tuple(f"{n:05X}{k:03X}" for k in range(n % 4))) for n in range(3 * ROWS + 5)]
    assert cache.replace(Snap(1, people)) == len(people)
    for member in people:
        for badge in member.badges:
            assert cache.lookup(badge).id == member.id
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("SELECT count(*) FROM badges").fetchone()[0] == sum(len(m.badges) for m in people)


def test_members_cache_new_list_replaces_old_whole(cache):
    cache.replace(Snap(1, [ADA, BOB]))
    cache.replace(Snap(2, [person(1)]))
    assert cache.lookup("04A1B2C3") is None and cache.lookup("0102030405") is None
    assert cache.lookup("00000001").id == "m-00001"
    assert cache.info() == CacheInfo(2, 1, "2026-11-25T09:00:00Z")


def test_members_cache_survives_reopen(tmp_path):
    first = MemberCache(tmp_path)
    first.replace(Snap(5, [ADA]))
    first.close()
    again = MemberCache(tmp_path)
    assert again.info().version == 5 and again.lookup("04A1B2C3").id == "m-ada"
    assert not (tmp_path / "members.corrupt").exists()
    again.close()


def test_members_cache_in_a_directory_whose_name_looks_like_a_uri(tmp_path):
    """The storage path reaches SQLite as a URI: `?`, `#` and `%` in it are not parameters."""
    storage = tmp_path / "lab?mode=rw #2 100%20"
    storage.mkdir()
    first = MemberCache(storage)
    first.replace(Snap(3, [ADA]))
    first.close()
    again = MemberCache(storage)  # checks the existing file first
    assert again.lookup("04A1B2C3").id == "m-ada" and again.info().version == 3
    assert sorted(p.name for p in storage.iterdir()) == [FILENAME]
    again.close()


def test_members_cache_other_instance_sees_apply(tmp_path):
    """A second process (fabpass members import) applies; the agent's cache reopens the file."""
    agent, importer = MemberCache(tmp_path), MemberCache(tmp_path)
    importer.replace(Snap(1, [ADA]))
    assert agent.lookup("04A1B2C3").id == "m-ada"
    importer.replace(Snap(2, [BOB]))
    assert agent.lookup("04A1B2C3") is None and agent.info().version == 2
    agent.close()
    importer.close()


# --- versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version, same", [(9, True), (8, False), (1, False)])
def test_members_cache_version_not_newer(cache, version, same):
    cache.replace(Snap(9, [ADA]))
    with pytest.raises(VersionNotNewer) as info:
        cache.replace(Snap(version, [BOB]))
    assert info.value.same is same
    assert str(version) in str(info.value) and "9" in str(info.value)
    assert cache.info().version == 9 and cache.lookup("04A1B2C3").id == "m-ada"
    assert cache.lookup("0102030405") is None


def test_members_cache_version_check_does_not_read_members(cache):
    cache.replace(Snap(9, [ADA]))
    with pytest.raises(VersionNotNewer):
        cache.replace(Snap(3, [ADA], fail_after=0))  # would raise RuntimeError if read


def test_members_cache_check_version(cache):
    cache.replace(Snap(9, [ADA]))
    cache.check_version(10)
    with pytest.raises(VersionNotNewer):
        cache.check_version(9)


# --- failure halfway ---------------------------------------------------------------------------


@pytest.mark.parametrize("fail_after", [0, 3, BATCH + 5])
def test_members_cache_snapshot_fails_halfway_keeps_old(tmp_path, cache, fail_after):
    cache.replace(Snap(1, [ADA, BOB]))
    before = (tmp_path / FILENAME).read_bytes()
    people = [person(n) for n in range(BATCH + 10)]
    with pytest.raises(RuntimeError, match="halfway"):
        cache.replace(Snap(2, people, fail_after=fail_after))
    assert (tmp_path / FILENAME).read_bytes() == before
    assert not (tmp_path / (FILENAME + ".new")).exists()
    assert cache.info() == CacheInfo(1, 2, "2026-11-25T09:00:00Z")
    assert cache.lookup("04A1B2C3").id == "m-ada" and cache.lookup("00000001") is None
    # the version was not used up: the same list, whole, applies
    assert cache.replace(Snap(2, people)) == len(people)
    assert cache.lookup("00000001").id == "m-00001"


def test_members_cache_list_wrong_after_its_members_keeps_old(tmp_path, cache):
    """Read in one pass (as the applier loads), a list is refused after its last member."""
    cache.replace(Snap(1, [ADA, BOB]))
    before = (tmp_path / FILENAME).read_bytes()
    people = [{"id": f"m-{n}", "status": "active", "badges": [f"{n:08X}"]} for n in range(BATCH + 10)]
    text = json.dumps({"v": 1, "version": 2, "generated_at": None, "members": people, "extra": 1})
    with pytest.raises(SnapshotError, match="extra: unknown top-level key"):
        cache.replace(load_json(text, check_members=False))
    assert (tmp_path / FILENAME).read_bytes() == before
    assert not (tmp_path / (FILENAME + ".new")).exists()
    assert cache.info() == CacheInfo(1, 2, "2026-11-25T09:00:00Z")


def test_members_cache_duplicate_badge_in_raw_snapshot_keeps_old(cache):
    cache.replace(Snap(1, [ADA]))
    clash = [person(1, badges=("0A0A0A0A",)), person(2, badges=("0A0A0A0A",))]
    with pytest.raises(sqlite3.IntegrityError):
        cache.replace(Snap(2, clash))
    assert cache.info().version == 1 and cache.lookup("04A1B2C3").id == "m-ada"


# --- lookups during apply -------------------------------------------------------------------------


def test_members_cache_lookups_during_apply_see_old_or_new(tmp_path):
    cache = MemberCache(tmp_path)
    old = [person(n, name="old") for n in range(3000)]
    new = [person(n, name="new", status="suspended") for n in range(3000)]
    cache.replace(Snap(1, old))
    halfway, resume = threading.Event(), threading.Event()

    def hook(index: int) -> None:
        if index == 2500:  # past the first batch: rows are written to the new file
            halfway.set()
            assert resume.wait(30)

    errors: list[BaseException] = []

    def applier() -> None:
        try:
            cache.replace(Snap(2, new, hook=hook))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
            halfway.set()

    thread = threading.Thread(target=applier)
    thread.start()
    assert halfway.wait(30)
    # apply is stopped halfway: every lookup answers from the old list
    for n in range(0, 3000, 97):
        found = cache.lookup(f"{n:08X}")
        assert found is not None and found.name == "old" and found.status == "active"
    assert cache.info().version == 1
    resume.set()
    seen = set()
    n = 0
    while thread.is_alive():  # lookups race the end of the write and the rename
        found = cache.lookup(f"{n % 3000:08X}")
        assert found is not None and (found.name, found.status) in {("old", "active"), ("new", "suspended")}
        seen.add(found.name)
        n += 1
    thread.join()
    assert not errors
    assert all(cache.lookup(f"{k:08X}").name == "new" for k in range(0, 3000, 97))
    assert cache.info().version == 2
    assert "old" in seen or n == 0
    cache.close()


def test_members_cache_lookups_from_several_threads(tmp_path):
    cache = MemberCache(tmp_path)
    cache.replace(Snap(1, [person(n) for n in range(200)]))
    results: dict[int, list] = {}

    def reader(k: int) -> None:
        results[k] = [cache.lookup(f"{n:08X}").id for n in range(200)]
        cache.close()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == [f"m-{n:05d}" for n in range(200)] for r in results.values())
    cache.close()


# --- a corrupt file at start ------------------------------------------------------------------------


def _not_a_db(path):
    path.write_bytes(b"this is not a database at all" * 100)


def _empty_file(path):
    path.write_bytes(b"")


def _other_schema(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()


def _truncated(path):
    MemberCache(path.parent).replace(Snap(1, [person(n) for n in range(3000)]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbled_pages(path):
    MemberCache(path.parent).replace(Snap(1, [person(n) for n in range(3000)]))
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):  # keep the header page, scribble on every other page
        data[offset:offset + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_not_a_db, _empty_file, _other_schema, _truncated, _garbled_pages])
def test_members_cache_corrupt_file_moved_aside_at_start(tmp_path, damage):
    path = tmp_path / FILENAME
    damage(path)
    damaged = path.read_bytes()
    cache = MemberCache(tmp_path)
    assert not path.exists()
    assert (tmp_path / "members.corrupt").read_bytes() == damaged
    assert cache.info() == CacheInfo(None, 0, None) and cache.lookup("00000001") is None
    # the next list rebuilds it
    assert cache.replace(Snap(1, [ADA])) == 1
    assert cache.lookup("04A1B2C3").id == "m-ada"
    cache.close()


def test_members_cache_of_another_schema_version_moved_aside_with_a_reason(tmp_path, caplog):
    """A cache written by an older fabpass (another table layout) is never read with this one's queries."""
    MemberCache(tmp_path).replace(Snap(1, [ADA]))
    conn = sqlite3.connect(tmp_path / FILENAME)
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    cache = MemberCache(tmp_path)
    assert (tmp_path / "members.corrupt").exists() and not (tmp_path / FILENAME).exists()
    assert "schema 1, this fabpass reads schema 2" in caplog.text
    assert cache.lookup("04A1B2C3") is None
    cache.replace(Snap(1, [ADA]))
    assert cache.lookup("04A1B2C3").id == "m-ada"
    cache.close()


# --- EM4100 printed numbers -----------------------------------------------------------------------

def test_cache_a_5_byte_read_finds_the_member_listed_by_the_number_printed_on_the_card(cache):
    from agent.core.model import printed_numbers

    printed = Member(id="m-em", name="Printed", status="active", badges=("em:0004567890",))
    pair = Member(id="m-pair", name="Pair", status="active", badges=("em:001,00002",))
    cache.replace(Snap(1, [ADA, BOB, printed, pair]))
    for read in ("0A0045B352", "000045B352", "FF0045B352"):  # any version byte
        assert cache.lookup(read) is None and cache.lookup(*printed_numbers(read)).id == "m-em"
    assert cache.lookup(*printed_numbers("0A00010002")).id == "m-pair"
    assert cache.lookup(*printed_numbers("0AFF010002")).id == "m-pair"  # the pair fixes bits 0-23 only
    assert cache.lookup("0102030405").id == "m-bob"  # listed in hex
    assert cache.lookup(*printed_numbers("0A0045B353")) is None
    assert cache.lookup("04A1B2C3", "em:0004567890").id == "m-ada"  # the first key found


def test_cache_lookup_in_an_empty_or_missing_cache_with_several_keys(cache):
    assert cache.lookup("0A0045B352", "em:0004567890", "em:069,45906") is None
