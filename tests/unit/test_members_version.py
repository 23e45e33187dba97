"""agent.members.version: the version rule, as members publish, refresh, import (and sync) use it."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.members.version import (
    MAX_VERSION,
    VersionError,
    check_follows,
    check_version,
    next_version,
)

NOW = dt.datetime(2026, 12, 2, 9, 0, 0, 123000, tzinfo=dt.timezone.utc)
NOW_MS = 1796202000123


def test_version_now_in_milliseconds():
    assert int(NOW.timestamp() * 1000) == NOW_MS


@pytest.mark.parametrize("retained, expected", [
    (None, NOW_MS),                        # nothing retained: the clock
    (1_700_000_000, NOW_MS),               # Unix seconds, as versions used to be
    (20261202001, NOW_MS),                 # a date written as a version
    (NOW_MS, NOW_MS + 1),                  # the same millisecond: never twice the same
    (NOW_MS + 5000, NOW_MS + 5001),        # a retained list from a clock ahead
    (MAX_VERSION - 1, MAX_VERSION),
    (MAX_VERSION + 1, NOW_MS),             # above the bound: never valid, ignored as agents ignore it
])
def test_version_next_follows_the_retained_one(retained, expected):
    assert next_version(retained, NOW) == expected


def test_version_nothing_follows_the_largest():
    with pytest.raises(VersionError, match="no version"):
        next_version(MAX_VERSION, NOW)


@pytest.mark.parametrize("version", [1, 42, MAX_VERSION])
def test_version_in_range(version):
    assert check_version(version) == version


@pytest.mark.parametrize("version, words", [
    (0, "positive"), (-1, "positive"), (True, "positive"), (1.0, "positive"), ("5", "positive"),
    (MAX_VERSION + 1, "9007199254740991"), (10**4299, r"\(4300 digits\)"),
], ids=["0", "-1", "true", "float", "string", "2^53", "4300-digits"])
def test_version_out_of_range(version, words):
    with pytest.raises(VersionError, match=words):
        check_version(version)


def test_version_follows_names_both():
    check_follows(8, 7)
    check_follows(8, None)
    check_follows(1, MAX_VERSION + 1)  # a retained version from before the bound blocks nothing
    with pytest.raises(VersionError, match="--version 7 is not above the retained version 7"):
        check_follows(7, 7, "--version")
