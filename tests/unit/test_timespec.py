"""agent.core.timespec: durations, points in time, RFC 3339 stamps."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.core.timespec import (
    MissingOffset,
    parse_duration,
    parse_rfc3339,
    parse_time,
    rfc3339,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90.0), ("5m", 300.0), ("4h", 14400.0), ("1h30m", 5400.0), ("7d", 604800.0),
        ("2w", 1209600.0), ("250ms", 0.25), ("1m30s", 90.0), ("1h 30m", 5400.0), (" 4H ", 14400.0),
        ("1.5h", 5400.0), ("0s", 0.0), ("1d2h3m4s5ms", 93784.005), ("1s1s", 2.0), ("007s", 7.0),
        (0, 0.0), (90, 90.0), (1.5, 1.5),
    ],
)
def test_timespec_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
    assert isinstance(parse_duration(text), float)


def test_timespec_parse_duration_spaces_are_ignored():
    # "5 m s" reads as "5ms": spaces are dropped before parsing
    assert parse_duration("5 m s") == pytest.approx(0.005)


@pytest.mark.parametrize(
    "text",
    ["", " ", "90", "4", "h", "4 hours", "4hr", "-5s", "+5s", "4h-", "h4", "1.s", ".5s", "4hh", "1e3s",
     "4h5", "4y", "1,5h", "forever", -1, -0.5, True, False, None, [], {}, "4h\n3"],
)
def test_timespec_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7d", NOW - dt.timedelta(days=7)),
        ("12h", NOW - dt.timedelta(hours=12)),
        ("90m", NOW - dt.timedelta(minutes=90)),
        ("0s", NOW),
        ("2026-11-24", dt.datetime(2026, 11, 24, tzinfo=UTC)),
        (" 2026-11-24 ", dt.datetime(2026, 11, 24, tzinfo=UTC)),
        ("2026-11-24T14:00", dt.datetime(2026, 11, 24, 14, 0, tzinfo=UTC)),
        ("2026-11-24T14:00:05Z", dt.datetime(2026, 11, 24, 14, 0, 5, tzinfo=UTC)),
        ("2026-11-24T14:00:00+02:00", dt.datetime(2026, 11, 24, 12, 0, tzinfo=UTC)),
        ("2026-11-24 14:00", dt.datetime(2026, 11, 24, 14, 0, tzinfo=UTC)),
    ],
)
def test_timespec_parse_time(text, expected):
    result = parse_time(text, NOW)
    assert result == expected and result.tzinfo is not None


def test_timespec_parse_time_naive_in_given_zone():
    plus_one = dt.timezone(dt.timedelta(hours=1))
    assert parse_time("2026-11-24", NOW, plus_one) == dt.datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    assert parse_time("2026-11-24T10:00", NOW, plus_one) == dt.datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    # an explicit offset wins over the zone
    assert parse_time("2026-11-24T10:00Z", NOW, plus_one) == dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "2026-02-30", "24/11/2026", "7 days ago",
                                  "2026-11-24T25:00", "-7d"])
def test_timespec_parse_time_rejects(text):
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text, NOW)


@pytest.mark.parametrize(
    "moment, text",
    [
        (dt.datetime(2026, 11, 25, 9, 0, tzinfo=UTC), "2026-11-25T09:00:00.000Z"),
        (dt.datetime(2026, 11, 25, 9, 0, 0, 123999, tzinfo=UTC), "2026-11-25T09:00:00.123Z"),  # truncated
        (dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), "2026-11-25T09:00:00.000Z"),
        (dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2025-12-31T22:30:00.000Z"),
    ],
)
def test_timespec_rfc3339(moment, text):
    assert rfc3339(moment) == text


def test_timespec_rfc3339_round_trips_through_parse_time():
    moment = dt.datetime(2026, 11, 25, 9, 0, 1, 250000, tzinfo=UTC)
    assert parse_time(rfc3339(moment), NOW) == moment


@pytest.mark.parametrize("text, expected", [
    ("2026-11-25T09:00:00Z", dt.datetime(2026, 11, 25, 9, tzinfo=dt.timezone.utc)),
    ("2026-11-25t09:00:00.123z", dt.datetime(2026, 11, 25, 9, 0, 0, 123000, tzinfo=dt.timezone.utc)),
    ("2026-11-25T10:00:00+01:00", dt.datetime(2026, 11, 25, 9, tzinfo=dt.timezone.utc)),
])
def test_timespec_parse_rfc3339_reads_z_in_either_case_and_offsets(text, expected) -> None:
    assert parse_rfc3339(text) == expected


def test_timespec_parse_rfc3339_refuses_a_time_without_an_offset_and_non_times() -> None:
    with pytest.raises(MissingOffset):
        parse_rfc3339("2026-11-25T09:00:00")
    for bad in ("yesterday", "", 1764061200, None):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)
