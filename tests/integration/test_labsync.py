"""`fabpass members sync` against a real Mosquitto, real files, a real logbook and a
spreadsheet served over HTTP on loopback."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.core.timespec import rfc3339
from agent.link.broker import Broker
from agent.link.retained import read_retained
from agent.logbook.store import ingest, open_db
from tests.support.helpers import publish
from tests.support.logbook import FakeMachine
from tests.support.webservers import Sheet, SheetHandler, serve

HEADER = "ID;Name;Badges;Status;Expires;Roles;Inductions;Email\n"
ROWS = [f"m-{i:04d};Member {i};{0x04A10000 + i:08X};Active;30/06/2027;;laser;m{i}@example.org\n"
        for i in range(1, 21)]


def sync(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["members", "sync", *args])
    return result.exit_code, result.output


def retained(url: str) -> dict | None:
    payload = read_retained(Broker.parse(url), "fabpass/members")
    return json.loads(payload) if payload else None


@pytest.fixture
def sheet_file(tmp_path: Path) -> Path:
    path = tmp_path / "members.csv"
    path.write_text(HEADER + "".join(ROWS), encoding="utf-8")
    return path


def test_labsync_output_escapes_what_the_source_says(mosquitto, sheet_file) -> None:
    """Member ids come from the lab's source: the diff and the errors show their control
    characters escaped, never as terminal commands."""
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url)[0] == 0
    sheet_file.write_text(sheet_file.read_text() + "m-\x1b[2J;Eve;CAFEBABE;active;;;laser;\n", encoding="utf-8")
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--dry-run")
    assert code == 0 and "\x1b" not in out and "m-\\x1b[2J" in out, out
    sheet_file.write_text(sheet_file.read_text() + "m-\x1b[5m;Bad;ZZZ;active;;;;\n", encoding="utf-8")
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--dry-run")
    assert code == 2 and "\x1b" not in out and "m-\\x1b[5m" in out, out


def test_labsync_first_sync_publishes_the_spreadsheet_as_it_is(mosquitto, sheet_file) -> None:
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url)
    assert code == 0, out
    assert "column 'email' is not a member field; ignored" in out
    assert "added 20: m-0001" in out and "published version" in out
    snapshot = retained(mosquitto.url)
    assert len(snapshot["members"]) == 20
    assert snapshot["members"][0] == {"id": "m-0001", "name": "Member 1", "badges": ["04A10001"],
                                      "status": "active", "expires": "2027-06-30", "roles": [],
                                      "inductions": {"laser": None}}


def test_labsync_dry_run_prints_the_diff_and_publishes_nothing(mosquitto, sheet_file) -> None:
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--dry-run")
    assert code == 0, out
    assert "dry run: would publish" in out and retained(mosquitto.url) is None


def test_labsync_unchanged_list_is_not_published_again_and_a_change_is(mosquitto, sheet_file) -> None:
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url)[0] == 0
    first = retained(mosquitto.url)
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url)
    assert code == 0 and "nothing to publish" in out, out
    assert retained(mosquitto.url) == first
    sheet_file.write_text(HEADER + "".join(ROWS).replace("m-0003;Member 3", "m-0003;Member Three")
                          .replace(";Active;30/06/2027;;laser;m5@", ";Suspended;30/06/2027;;laser;m5@")
                          + "m-0099;New Member;CAFEBABE;active;;;;\n", encoding="utf-8")
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url)
    assert code == 0, out
    assert "added 1: m-0099" in out and "changed 2: m-0003 (name), m-0005 (status)" in out
    second = retained(mosquitto.url)
    assert second["version"] > first["version"]  # even within the same second


def test_labsync_a_retained_list_older_than_a_day_is_refreshed(mosquitto, sheet_file) -> None:
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url)[0] == 0
    old = retained(mosquitto.url)
    old["generated_at"] = rfc3339(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1, minutes=1))
    publish(mosquitto.port, "fabpass/members", json.dumps(old).encode(), retain=True)
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url)
    assert code == 0 and "more than a day old" in out, out
    assert retained(mosquitto.url)["version"] > old["version"]


def test_labsync_versions_grow_past_a_retained_version_from_the_future(mosquitto, sheet_file) -> None:
    ahead = {"v": 1, "version": 2**52, "generated_at": "2026-12-01T00:00:00Z", "members": []}
    publish(mosquitto.port, "fabpass/members", json.dumps(ahead).encode(), retain=True)
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url)[0] == 0
    assert retained(mosquitto.url)["version"] == 2**52 + 1


@pytest.mark.parametrize("keep", [9, 17])
def test_labsync_refuses_to_drop_more_than_max_shrink(mosquitto, sheet_file, keep: int) -> None:
    """Half the members (a half-exported spreadsheet) publishes nothing: exit 2, the list kept."""
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url)[0] == 0
    before = retained(mosquitto.url)
    sheet_file.write_text(HEADER + "".join(ROWS[:keep]), encoding="utf-8")
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url)
    assert code == 2, out
    assert f"drops {20 - keep} of 20 members" in out and "more than --max-shrink 10%" in out
    assert retained(mosquitto.url) == before
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--max-shrink", "60")
    assert code == 0, out
    assert len(retained(mosquitto.url)["members"]) == keep


@pytest.mark.parametrize("content, message", [
    ("", "empty: no header row"),
    (HEADER, "no members (only a header)"),
    (HEADER + "".join(ROWS) + "m-0021;Member", "row 22: 2 cells; the header has 8 (a truncated file?)"),
    (HEADER + ROWS[0] + "m-0002;Bad;04A1;Active;;;;\n", "row 3 (id 'm-0002'): badges: badge '04A1' has 4 hex digits"),
])
def test_labsync_bad_source_publishes_nothing(mosquitto, sheet_file, content: str, message: str) -> None:
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url)[0] == 0
    before = retained(mosquitto.url)
    sheet_file.write_text(content, encoding="utf-8")
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url)
    assert code == 2 and message in out, out
    assert retained(mosquitto.url) == before


def test_labsync_unreachable_broker_is_exit_1(sheet_file) -> None:
    from tests.support.helpers import free_port

    code, out = sync("--source", str(sheet_file), "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach broker" in out, out


def test_labsync_unreachable_source_is_exit_1_and_publishes_nothing(mosquitto, sheet_file) -> None:
    from tests.support.helpers import free_port

    assert sync("--source", str(sheet_file), "--broker", mosquitto.url)[0] == 0
    before = retained(mosquitto.url)
    code, out = sync("--source", f"http://127.0.0.1:{free_port()}/members.csv", "--broker", mosquitto.url)
    assert code == 1 and "127.0.0.1" in out, out
    assert retained(mosquitto.url) == before


def test_labsync_xlsx_source(mosquitto, tmp_path: Path) -> None:
    from tests.unit.test_table import workbook

    path = tmp_path / "members.xlsx"
    path.write_bytes(workbook(("Id", "Name", "Badges", "Status", "Expires"),
                              ("m-1", "Ada", "04A1B2C3", "Active", dt.datetime(2027, 6, 30))))
    code, out = sync("--source", str(path), "--broker", mosquitto.url)
    assert code == 0, out
    assert retained(mosquitto.url)["members"][0]["expires"] == "2027-06-30"


# --- over HTTP ------------------------------------------------------------------------------------

def test_labsync_http_source_asks_conditionally_and_reuses_the_kept_answer(mosquitto, tmp_path: Path) -> None:
    sheet = Sheet(body=(HEADER + "".join(ROWS)).encode())
    state = tmp_path / "state"
    with serve(SheetHandler, sheet) as base:
        url = f"{base}/export?format=csv"
        code, out = sync("--source", url, "--broker", mosquitto.url, "--state-dir", str(state))
        assert code == 0 and "published" in out, out
        assert "If-None-Match" not in sheet.requests[0]
        code, out = sync("--source", url, "--broker", mosquitto.url, "--state-dir", str(state))
        assert code == 0 and "nothing to publish" in out, out
        assert sheet.requests[1]["If-None-Match"] == '"v1"'
        assert sheet.requests[1]["If-Modified-Since"] == sheet.last_modified
        assert sheet.not_modified == 1
        sheet.body, sheet.etag = (HEADER + "".join(ROWS) + "m-0099;New;CAFEBABE;active;;;;\n").encode(), '"v2"'
        code, out = sync("--source", url, "--broker", mosquitto.url, "--state-dir", str(state))
        assert code == 0 and "added 1: m-0099" in out, out


def test_labsync_http_source_that_cannot_keep_its_answer_still_publishes(mosquitto, tmp_path: Path) -> None:
    """The kept answer only saves a download: a state directory that cannot be written is a
    warning, not a traceback."""
    from agent.labsync.sources import HttpSource

    sheet = Sheet(body=(HEADER + "".join(ROWS)).encode())
    state = tmp_path / "state"
    with serve(SheetHandler, sheet) as base:
        url = f"{base}/export?format=csv"
        _, body = HttpSource(url, state)._state_files()
        body.with_suffix(".body.new").mkdir(parents=True)  # where the body is written first: in the way
        code, out = sync("--source", url, "--broker", mosquitto.url, "--state-dir", str(state))
    assert code == 0 and "published" in out, out
    assert f"warning: cannot keep the answer in {state}" in out
    assert len(retained(mosquitto.url)["members"]) == len(ROWS)


@pytest.mark.parametrize("change, message", [
    ({"status": 500}, "HTTP 500"),
    ({"body": b"<!DOCTYPE html><html><body>Please sign in</body></html>", "content_type": "text/html",
      "etag": '"login"'}, "an HTML page, not a member list"),
    ({"body": (HEADER + "".join(ROWS[:10])).encode(), "etag": '"half"'}, "drops 10 of 20 members"),
])
def test_labsync_http_error_page_or_half_the_members_publishes_nothing(mosquitto, tmp_path: Path,
                                                                       change: dict, message: str) -> None:
    sheet = Sheet(body=(HEADER + "".join(ROWS)).encode())
    with serve(SheetHandler, sheet) as base:
        args = ["--source", f"{base}/members.csv", "--broker", mosquitto.url, "--state-dir", str(tmp_path)]
        assert sync(*args)[0] == 0
        before = retained(mosquitto.url)
        for key, value in change.items():
            setattr(sheet, key, value)
        code, out = sync(*args)
        assert code == 2 and message in out, out
        assert retained(mosquitto.url) == before


# --- what machines granted --------------------------------------------------------------------------

@pytest.fixture
def logbook_with_grants(tmp_path: Path) -> Path:
    """A logbook that archived, through its normal ingest path, what two machines granted."""
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    now = dt.datetime.now(dt.timezone.utc)
    path = tmp_path / "logbook.db"
    with open_db(path, create=True) as db:
        for event in [
            laser.event("badge_enrolled", now, member_id="m-0001", badge="deadbeef", by="giulia"),
            laser.event("induction_granted", now, member_id="m-0002", induction="cnc", by="m-0007",
                        expires="2027-12-31"),
            cnc.event("induction_granted", now, member_id="m-0003", induction="laser", by="m-0007", expires=None),
            cnc.event("badge_enrolled", now, member_id="m-0404", badge="0A0B0C0D", by="giulia"),
        ]:
            ingest(db, event)
    return path


def pending(db: Path, *fmt: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["members", "pending", "--db", str(db), *fmt])
    return result.exit_code, result.output


def test_labsync_grants_are_merged_until_the_source_holds_them(mosquitto, sheet_file, logbook_with_grants) -> None:
    db = logbook_with_grants
    code, out = pending(db, "--json")
    assert code == 0
    assert [(g["kind"], g["member_id"], g["value"], g["machine"]) for g in json.loads(out)] == [
        ("badge", "m-0001", "deadbeef", "laser-1"), ("induction", "m-0002", "cnc", "laser-1"),
        ("induction", "m-0003", "laser", "cnc-1"), ("badge", "m-0404", "0A0B0C0D", "cnc-1")]
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))
    assert code == 0, out
    assert "merged badge deadbeef for m-0001 (granted on laser-1)" in out
    assert "merged induction cnc for m-0002" in out
    assert "not merged: badge 0A0B0C0D for m-0404 (granted on cnc-1): the source has no such member" in out
    members = {m["id"]: m for m in retained(mosquitto.url)["members"]}
    assert members["m-0001"]["badges"] == ["04A10001", "DEADBEEF"]
    assert members["m-0002"]["inductions"] == {"laser": None, "cnc": "2027-12-31"}
    # m-0003's laser induction (no expiry) is already in the source: no longer pending.
    assert [(g["member_id"], g["value"]) for g in json.loads(pending(db, "--json")[1])] == [
        ("m-0001", "deadbeef"), ("m-0002", "cnc"), ("m-0404", "0A0B0C0D")]
    # The lab copies the badge into its spreadsheet: the next sync settles it.
    sheet_file.write_text(sheet_file.read_text().replace(";04A10001;", ";04A10001 DEADBEEF;"), encoding="utf-8")
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))
    assert code == 0, out
    assert [g["member_id"] for g in json.loads(pending(db, "--json")[1])] == ["m-0002", "m-0404"]


def dismiss(db: Path, *ids: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["members", "dismiss", "--db", str(db), "--by", "giulia", *ids])
    return result.exit_code, result.output


def test_labsync_a_dismissed_grant_is_merged_no_more_and_the_next_sync_retires_it(
        mosquitto, sheet_file, logbook_with_grants) -> None:
    db = logbook_with_grants
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))[0] == 0
    published = retained(mosquitto.url)
    assert "DEADBEEF" in {m["id"]: m for m in published["members"]}["m-0001"]["badges"]
    grants = json.loads(pending(db, "--json")[1])
    enrolled = next(g for g in grants if g["value"] == "deadbeef")
    # the ID column of the table is the event id's first 8 characters
    assert enrolled["event_id"][:8] in pending(db)[1]
    code, out = dismiss(db, enrolled["event_id"][:8])
    assert code == 0 and "dismissed badge deadbeef for m-0001 (granted on laser-1)" in out
    assert enrolled["event_id"] not in [g["event_id"] for g in json.loads(pending(db, "--json")[1])]
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))
    assert code == 0, out
    after = retained(mosquitto.url)
    assert after["version"] > published["version"] and after["generated_at"] > published["generated_at"]
    assert {m["id"]: m for m in after["members"]}["m-0001"]["badges"] == ["04A10001"]
    # the next sync has nothing to do: the dismissal is older than the list it retired the grant with
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))
    assert code == 0 and retained(mosquitto.url)["version"] == after["version"]


def test_labsync_a_dismissed_grant_never_merged_is_retired_by_a_list_published_for_it(
        mosquitto, sheet_file, logbook_with_grants) -> None:
    """m-0404's badge was never merged (the source has no m-0404), so dismissing it changes
    no member: the sync publishes all the same, once, for the machine to drop the grant."""
    db = logbook_with_grants
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))[0] == 0
    published = retained(mosquitto.url)
    orphan = next(g for g in json.loads(pending(db, "--json")[1]) if g["member_id"] == "m-0404")
    assert dismiss(db, orphan["event_id"])[0] == 0  # the whole id, as --json gives it
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))
    assert code == 0 and "dismissed" in out, out
    after = retained(mosquitto.url)
    assert after["version"] > published["version"] and after["members"] == published["members"]
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(db))[0] == 0
    assert retained(mosquitto.url)["version"] == after["version"]


@pytest.mark.parametrize("ids, message", [
    (("00000000-0000",), "not a pending grant's id"),
    (("abc",), "an id of 8 characters or more"),
    (("",), "an id of 8 characters or more"),
])
def test_labsync_dismiss_refuses_an_id_that_is_not_one_pending_grant_and_changes_nothing(
        logbook_with_grants, ids, message) -> None:
    before = pending(logbook_with_grants, "--json")[1]
    first = json.loads(before)[0]["event_id"]
    code, out = dismiss(logbook_with_grants, first, *ids)  # all or none
    assert code == 2 and message in out
    assert pending(logbook_with_grants, "--json")[1] == before


def test_labsync_dismiss_without_by_where_the_system_cannot_name_the_user(logbook_with_grants, monkeypatch) -> None:
    import getpass

    def nobody() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", nobody)
    first = json.loads(pending(logbook_with_grants, "--json")[1])[0]["event_id"]
    result = CliRunner().invoke(main, ["members", "dismiss", "--db", str(logbook_with_grants), first])
    assert result.exit_code == 2 and "--by: say who you are" in result.output


def test_labsync_pending_csv_pastes_into_a_spreadsheet(logbook_with_grants) -> None:
    code, out = pending(logbook_with_grants, "--csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "kind,member_id,value,expires,by,machine,ts,event_id"
    assert lines[1].startswith("badge,m-0001,deadbeef,,giulia,laser-1,")
    code, out = pending(logbook_with_grants)
    assert code == 0 and "m-0404" in out and "KIND" in out


def test_labsync_pending_csv_keeps_every_cell_as_the_machines_sent_it(tmp_path: Path) -> None:
    """The CSV goes to a spreadsheet byte for byte: a lone CR is quoted (RFC 4180 rows end
    in CRLF) and an escape sequence is not stripped on the way through a pipe."""
    laser = FakeMachine("laser-1")
    path = tmp_path / "logbook.db"
    with open_db(path, create=True) as db:
        ingest(db, laser.event("induction_granted", dt.datetime.now(dt.timezone.utc), member_id="m-1",
                               induction="la\rser", by="tess\x1b[31m", expires=None))
    code, out = pending(path, "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [(r["value"], r["by"]) for r in rows] == [("la\rser", "tess\x1b[31m")]


def test_labsync_dry_run_settles_nothing(mosquitto, sheet_file, logbook_with_grants) -> None:
    before = pending(logbook_with_grants, "--json")[1]
    assert sync("--source", str(sheet_file), "--broker", mosquitto.url, "--db", str(logbook_with_grants),
                "--dry-run")[0] == 0
    assert pending(logbook_with_grants, "--json")[1] == before


def test_labsync_publish_of_a_table_takes_a_version_above_the_retained_one(mosquitto, sheet_file) -> None:
    """Two lists published in the same second got the same version (the agents kept one,
    the broker retained the other); and a CSV's Unix-seconds version fell below a retained
    millisecond one."""
    versions = []
    for _ in range(3):
        result = CliRunner().invoke(main, ["members", "publish", str(sheet_file), "--broker", mosquitto.url])
        assert result.exit_code == 0, result.output
        versions.append(retained(mosquitto.url)["version"])
    assert versions == sorted(set(versions))
    ahead = {"v": 1, "version": versions[-1] + 10**9, "generated_at": None, "members": []}
    publish(mosquitto.port, "fabpass/members", json.dumps(ahead).encode(), retain=True)
    assert CliRunner().invoke(main, ["members", "publish", str(sheet_file), "--broker", mosquitto.url]).exit_code == 0
    assert retained(mosquitto.url)["version"] == ahead["version"] + 1


def test_labsync_http_source_without_validators_rewrites_nothing_when_nothing_changed(mosquitto, tmp_path: Path) -> None:
    """A server that sends no ETag or Last-Modified sends the whole body each time: the kept
    copy is written only when it differs (the broker host's disk may be an SD card)."""
    sheet = Sheet(body=(HEADER + "".join(ROWS)).encode(), etag="", last_modified="")
    state = tmp_path / "state"
    with serve(SheetHandler, sheet) as base:
        args = ["--source", f"{base}/members.csv", "--broker", mosquitto.url, "--state-dir", str(state)]
        assert sync(*args)[0] == 0
        kept = {path.name: path.stat().st_ino for path in state.iterdir()}
        assert sync(*args)[0] == 0
        assert {path.name: path.stat().st_ino for path in state.iterdir()} == kept
        assert "If-None-Match" not in sheet.requests[1]


def test_labsync_names_inductions_no_machine_asks_for(mosquitto, sheet_file) -> None:
    for machine, induction in (("laser-1", "laser"), ("cnc-1", "cnc")):
        publish(mosquitto.port, f"fabpass/machines/{machine}/status",
                json.dumps({"v": 1, "machine": machine, "state": "idle", "induction": induction}), retain=True)
    sheet_file.write_text(HEADER + "".join(ROWS) + "m-0099;New;CAFEBABE;active;;;lazer cnc;\n", encoding="utf-8")
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--dry-run")
    assert code == 0, out
    assert "inductions no machine asks for: lazer" in out


def test_labsync_signed_sync_verifies_with_the_labs_public_key(mosquitto, sheet_file, tmp_path: Path) -> None:
    from agent.members.snapshot import load_json

    keys = tmp_path / "keys"
    assert CliRunner().invoke(main, ["keys", "generate", str(keys)]).exit_code == 0
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--sign-key", str(keys / "signing.key"))
    assert code == 0 and "(signed)" in out, out
    payload = read_retained(Broker.parse(mosquitto.url), "fabpass/members")
    assert load_json(payload, (keys / "signing.pub").read_text().strip()).count == 20
    code, out = sync("--source", str(sheet_file), "--broker", mosquitto.url, "--sign-key", str(keys / "signing.key"))
    assert code == 0 and "nothing to publish" in out, out  # a signed retained list reads as any other
