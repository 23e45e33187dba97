"""The web view in a real headless Chromium: the page loads, shows a session, and filters work."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from agent.logbook.names import record_names
from agent.logbook.store import ingest, open_db, record_status
from agent.logbook.web import make_server
from tests.support.helpers import free_port, port_open, wait_for
from tests.support.logbook import UTC, FakeMachine, stop_cleanly

PASSWORD = "correct horse battery"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def web_url(tmp_path):
    """A web view on a loopback port over a logbook with a session on each of two machines."""
    laser, cnc = FakeMachine("laser-1"), FakeMachine("cnc-1")
    start = dt.datetime.now(UTC) - dt.timedelta(hours=3)
    db_path = tmp_path / "logbook.db"
    with open_db(db_path, create=True) as db:
        for event in (laser.session("m-ada", "04A1B2C3", start, 50)
                      + cnc.session("m-grace", "04A1B2C4", start, 75)
                      + [laser.refusal(start, "04A1B2C5", "not_inducted", member_id="m-alan"),
                         cnc.event("out_of_order_reported", start + dt.timedelta(minutes=80), by="m-grace"),
                         cnc.event("machine_locked", start + dt.timedelta(minutes=80), by="m-grace",
                                   reason="out_of_order"),
                         laser.event("badge_enrolled", start, member_id="m-alan", badge="CAFEBABE", by="giulia")]):
            ingest(db, event)
        record_names(db, json.dumps({"v": 1, "version": 5, "members": [
            {"id": "m-ada", "name": "Ada Lovelace"}, {"id": "m-grace", "name": "Grace Hopper"},
            {"id": "m-alan", "name": "Alan <b>Turing</b>"}]}).encode())
        record_status(db, "laser-1", {"v": 1, "machine": "laser-1", "state": "in_use", "member_id": "m-ada"})
        record_status(db, "cnc-1", {"v": 1, "machine": "cnc-1", "state": "locked", "locked": True, "member_id": None})
    server = make_server(db_path, "127.0.0.1", 0, PASSWORD, UTC)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join(5)


def dump_dom(url: str, profile) -> str:
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.fail("chromium is not installed: run scripts/test (it installs it)")
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rows(dom: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', dom, re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.S)]


def login(url: str) -> str:
    return url.replace("http://", f"http://technician:{PASSWORD.replace(' ', '%20')}@")


def test_logbook_web_page_shows_sessions_fleet_and_chart(web_url, tmp_path):
    dom = dump_dom(login(web_url), tmp_path / "profile")
    assert sorted((r[0], r[1], r[2]) for r in rows(dom, "sessions")) == [
        ("cnc-1", "m-grace", "Grace Hopper"), ("laser-1", "m-ada", "Ada Lovelace")]
    assert rows(dom, "fleet")[1][:3] == ["laser-1", "in_use", "Ada Lovelace (m-ada)"]
    assert rows(dom, "refusals")[0][2:] == ["m-alan", "Alan &lt;b&gt;Turing&lt;/b&gt;", "04A1B2C5", "not_inducted"]
    assert {m for m in re.findall(r'class="bar" data-machine="([^"]+)"', dom)} == {"laser-1", "cnc-1"}


def test_logbook_web_shows_lock_reasons_out_of_order_reports_and_pending_changes(web_url, tmp_path):
    dom = dump_dom(login(web_url), tmp_path / "profile")
    cnc = rows(dom, "fleet")[0]
    assert cnc[:2] == ["cnc-1", "locked"] and cnc[3] == "out_of_order (by Grace Hopper)"
    assert [(r[0], r[2]) for r in rows(dom, "out-of-order")] == [("cnc-1", "Grace Hopper (m-grace)")]
    assert [r[:4] for r in rows(dom, "pending")] == [["badge", "m-alan", "Alan &lt;b&gt;Turing&lt;/b&gt;", "CAFEBABE"]]
    assert re.fullmatch(r"[0-9a-f]{8}", rows(dom, "pending")[0][8])  # the ID `members dismiss` takes


def test_logbook_web_chart_honours_the_machine_filter_and_shows_whole_hours(web_url, tmp_path):
    dom = dump_dom(login(web_url) + "?machine=cnc-1", tmp_path / "profile")
    assert {m for m in re.findall(r'class="bar" data-machine="([^"]+)"', dom)} == {"cnc-1"}
    ticks = re.findall(r'<text [^>]*class="tick"[^>]*>([^<]+)</text>', dom)
    assert ticks == ["0 h", "1 h", "2 h"]  # 75 minutes in a week: the axis runs to 2 h in whole hours


def test_logbook_web_filter_shows_only_matching_rows(web_url, tmp_path):
    credentials = login(web_url)
    dom = dump_dom(credentials + "?machine=cnc-1&since=1d", tmp_path / "profile")
    assert [(r[0], r[1], r[6]) for r in rows(dom, "sessions")] == [("cnc-1", "m-grace", "1.25")]
    assert rows(dom, "refusals") == []
    dom = dump_dom(credentials + "?member=m-alan", tmp_path / "profile2")
    assert rows(dom, "sessions") == [] and [r[2] for r in rows(dom, "refusals")] == ["m-alan"]


@pytest.mark.parametrize("password", [None, "wrong"])
def test_logbook_web_asks_for_the_password(web_url, password):
    request = urllib.request.Request(web_url)
    if password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"x:{password}".encode()).decode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 401 and "Basic" in refused.value.headers["WWW-Authenticate"]


def test_logbook_web_command_serves_and_stops_on_sigterm(tmp_path):
    open_db(tmp_path / "logbook.db", create=True).close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "logbook", "web", "--db", str(tmp_path / "logbook.db"),
                             "--port", str(port)], stderr=subprocess.PIPE, env=os.environ)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 20, "the web view to listen")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b'<table id="sessions">' in page.read()
    finally:
        stop_cleanly(proc)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as page:
            return page.status, page.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def test_logbook_web_a_future_dated_session_or_a_wild_since_never_takes_it_down(tmp_path):
    """Issue scenario 7: one session dated ahead (a Pi whose clock runs fast) took the page
    down with a KeyError in weekly_hours; a `since` out of range was a traceback."""
    laser = FakeMachine("laser-1")
    db_path = tmp_path / "logbook.db"
    with open_db(db_path, create=True) as db:
        for event in laser.session("m-ada", "04A1B2C3", dt.datetime.now(UTC) + dt.timedelta(days=9), 50):
            ingest(db, event)
    server = make_server(db_path, "127.0.0.1", 0, None, UTC)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        status, page = _get(url + "?since=")
        assert status == 200 and "m-ada" in page
        for since in ("99999999d", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00%2B14:00"):
            status, page = _get(url + f"?since={since}")
            assert status == 400 and "out of range" in page, since
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
