"""The web view in a real headless Chromium: the page loads, shows a session, and filters work."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

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
                      + [laser.refusal(start, "04A1B2C5", "not_inducted", member_id="m-alan")]):
            ingest(db, event)
        record_status(db, "laser-1", {"v": 1, "machine": "laser-1", "state": "in_use", "member_id": "m-ada"})
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


def test_logbook_web_page_shows_sessions_fleet_and_chart(web_url, tmp_path):
    dom = dump_dom(web_url.replace("http://", f"http://technician:{PASSWORD.replace(' ', '%20')}@"),
                   tmp_path / "profile")
    assert sorted((r[0], r[1]) for r in rows(dom, "sessions")) == [("cnc-1", "m-grace"), ("laser-1", "m-ada")]
    assert rows(dom, "fleet")[0][:3] == ["laser-1", "in_use", "m-ada"]
    assert rows(dom, "refusals")[0][4] == "not_inducted"
    assert {m for m in re.findall(r'class="bar" data-machine="([^"]+)"', dom)} == {"laser-1", "cnc-1"}


def test_logbook_web_filter_shows_only_matching_rows(web_url, tmp_path):
    credentials = web_url.replace("http://", f"http://technician:{PASSWORD.replace(' ', '%20')}@")
    dom = dump_dom(credentials + "?machine=cnc-1&since=1d", tmp_path / "profile")
    assert [(r[0], r[1], r[5]) for r in rows(dom, "sessions")] == [("cnc-1", "m-grace", "1.25")]
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
