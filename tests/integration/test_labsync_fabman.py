"""The Fabman source against a local fake of Fabman's documented API on loopback:
pagination through `Link` headers, `X-Total-Count`, 429 with back-off, bearer keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.labsync.fabman import FabmanSource, induction_name
from agent.labsync.sources import SourceError, SourceUnreachable
from agent.link.broker import Broker
from agent.link.retained import read_retained
from tests.support.webservers import Fabman, FabmanHandler, serve

COURSES = [
    {"id": 1, "title": "Laser cutter", "state": "active"},
    {"id": 2, "title": "CNC router (Shopbot)", "state": "active"},
    {"id": 3, "title": "Old lathe", "state": "archived"},
]


def member(i: int, state: str = "active", token: str | None = None, trainings: list | None = None) -> dict:
    embedded = {"trainings": trainings or []}
    if token:
        embedded["key"] = {"type": "nfca", "token": token, "state": "active"}
    return {"id": 100 + i, "memberNumber": str(i), "firstName": f"First{i}", "lastName": f"Last{i}",
            "state": state, "_embedded": embedded}


MEMBERS = [
    member(1, token="04a1b2c3d4e5f6", trainings=[{"trainingCourse": 1, "date": "2026-01-10", "untilDate": None},
                                                 {"trainingCourse": 3, "date": "2020-01-01", "untilDate": None}]),
    member(2, token="DEADBEEF", trainings=[{"trainingCourse": 2, "date": "2026-02-01", "untilDate": "2027-01-31"}]),
    member(3, state="locked", token="CAFEBABE"),
    member(4, token="not-a-uid"),
    member(5),
]


def source(base: str, **kwargs) -> tuple[FabmanSource, list[float]]:
    slept: list[float] = []
    return FabmanSource(f"{base}/api/v1", "test-api-key", retry_wait=0.01, sleep=slept.append, **kwargs), slept


def test_labsync_fabman_members_keys_and_trainings_across_pages() -> None:
    fabman = Fabman(MEMBERS, COURSES)
    with serve(FabmanHandler, fabman) as base:
        fabman_source, _ = source(base)
        listing = fabman_source.fetch()
    assert [member for _, member in listing.rows] == [
        {"id": "101", "name": "First1 Last1", "status": "active", "badges": ["04A1B2C3D4E5F6"],
         "expires": None, "roles": [], "inductions": {"laser-cutter": None}},
        {"id": "102", "name": "First2 Last2", "status": "active", "badges": ["DEADBEEF"],
         "expires": None, "roles": [], "inductions": {"cnc-router-shopbot": "2027-01-31"}},
        {"id": "103", "name": "First3 Last3", "status": "suspended", "badges": ["CAFEBABE"],
         "expires": None, "roles": [], "inductions": {}},
        {"id": "104", "name": "First4 Last4", "status": "active", "badges": [],
         "expires": None, "roles": [], "inductions": {}},
        {"id": "105", "name": "First5 Last5", "status": "active", "badges": [],
         "expires": None, "roles": [], "inductions": {}},
    ]
    assert listing.warnings == [f"fabman {base}/api/v1 member 104: key left out: badge 'not-a-uid' is not hexadecimal"]
    pages = [r for r in fabman.requests if r.startswith("/api/v1/members")]
    assert len(pages) == 3  # 5 members, 2 a page: followed through the Link headers
    assert all("offset=" in page for page in pages[1:])


def test_labsync_fabman_429_backs_off_and_asks_again() -> None:
    fabman = Fabman(MEMBERS, COURSES, too_many=3)
    with serve(FabmanHandler, fabman) as base:
        fabman_source, slept = source(base)
        assert len(fabman_source.fetch().rows) == 5
    assert slept == [0.01, 0.02, 0.04]  # doubling; Retry-After: 0 asks for no more


def test_labsync_fabman_gives_up_after_too_many_429() -> None:
    fabman = Fabman(MEMBERS, COURSES, too_many=100)
    with serve(FabmanHandler, fabman) as base:
        with pytest.raises(SourceUnreachable, match="still 429 Too Many Requests"):
            source(base)[0].fetch()


def test_labsync_fabman_a_listing_shorter_than_its_total_count_is_refused() -> None:
    fabman = Fabman(MEMBERS, COURSES, lie_about_total=1)
    with serve(FabmanHandler, fabman) as base:
        with pytest.raises(SourceError, match=r"training-courses: read 3 records, X-Total-Count says 4 \(truncated\)"):
            source(base)[0].fetch()


def test_labsync_fabman_wrong_key_is_refused() -> None:
    with serve(FabmanHandler, Fabman(MEMBERS, COURSES, token="another")) as base:
        with pytest.raises(SourceError, match="401 Unauthorized: the API key was refused"):
            source(base)[0].fetch()


def test_labsync_fabman_induction_names() -> None:
    assert induction_name("Laser cutter") == "laser-cutter"
    assert induction_name("  CNC router (Shopbot) ") == "cnc-router-shopbot"


def test_labsync_fabman_through_members_sync(mosquitto, tmp_path: Path) -> None:
    token = tmp_path / "fabman.key"
    token.write_text("test-api-key\n")
    with serve(FabmanHandler, Fabman(MEMBERS, COURSES)) as base:
        result = CliRunner().invoke(main, ["members", "sync", "--source", f"fabman+{base}/api/v1",
                                           "--token-file", str(token), "--broker", mosquitto.url])
    assert result.exit_code == 0, result.output
    assert "added 5: 101, 102, 103, 104, 105" in result.output
    snapshot = json.loads(read_retained(Broker.parse(mosquitto.url), "fabpass/members"))
    assert [m["id"] for m in snapshot["members"]] == ["101", "102", "103", "104", "105"]
