"""agent.core.hours: opening-hours rules and `is_open`, in the machine's local time."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.core.hours import OpeningHours, Window

# 2026-11-23 is a Monday.
MON, TUE, WED, THU, FRI, SAT, SUN = (dt.date(2026, 11, 23) + dt.timedelta(days=i) for i in range(7))


def at(day: dt.date, hh: int, mm: int = 0, ss: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm, ss, us))


@pytest.mark.parametrize(
    "rules, windows",
    [
        (["mon 09:00-17:00"], [(0, "09:00", "17:00")]),
        (["mon-wed 9:00-17:30"], [(0, "09:00", "17:30"), (1, "09:00", "17:30"), (2, "09:00", "17:30")]),
        (["Sat 10:00-14:00"], [(5, "10:00", "14:00")]),
        (["  sun 10:00-14:00  "], [(6, "10:00", "14:00")]),
        (["fri-mon 10:00-11:00"], [(4, "10:00", "11:00"), (5, "10:00", "11:00"), (6, "10:00", "11:00"),
                                   (0, "10:00", "11:00")]),
        (["mon  08:00-12:00", "mon 13:00-18:00"], [(0, "08:00", "12:00"), (0, "13:00", "18:00")]),
        (["tue 00:00-24:00"], [(1, "00:00", None)]),
        (["wed-wed 07:00-08:00"], [(2, "07:00", "08:00")]),
    ],
)
def test_hours_parse(rules, windows):
    def t(text):
        return dt.time.max if text is None else dt.time.fromisoformat(text)
    assert OpeningHours.parse(rules).windows == tuple(Window(d, t(a), t(b)) for d, a, b in windows)


@pytest.mark.parametrize(
    "rules",
    [
        [], "mon 09:00-17:00", None, ("mon 09:00-17:00",), [5], [None],
        ["mon"], ["09:00-17:00"], ["monday 09:00-17:00"], ["mon-fri 9-17"], ["abc 09:00-17:00"],
        ["mon-xyz 09:00-17:00"], ["mon 17:00-09:00"], ["mon 09:00-09:00"], ["mon 24:00-24:00"],
        ["mon 24:00-01:00"], ["mon 25:00-26:00"], ["mon 09:60-10:00"], ["mon 09:00-24:01"],
        ["mon 09:00-17:00,tue 09:00-17:00"], ["mon 09:00-17:00", "bad"], ["mon 9:0-17:00"],
        ["mon 09:00 - 17:00"],
    ],
)
def test_hours_parse_rejects(rules):
    with pytest.raises(ValueError):
        OpeningHours.parse(rules)


WEEKDAYS_9_19 = OpeningHours.parse(["mon-fri 09:00-19:00", "sat 10:00-14:00"])


@pytest.mark.parametrize(
    "moment, is_open",
    [
        (at(MON, 9), True),                     # the start is inside
        (at(MON, 8, 59, 59, 999999), False),
        (at(MON, 18, 59, 59, 999999), True),
        (at(MON, 19), False),                   # the end is outside
        (at(WED, 12), True),
        (at(FRI, 18, 30), True),
        (at(SAT, 9, 59), False),
        (at(SAT, 10), True),
        (at(SAT, 14), False),
        (at(SUN, 12), False),
        (at(MON, 3), False),
    ],
)
def test_hours_is_open_weekdays(moment, is_open):
    assert WEEKDAYS_9_19.is_open(moment) is is_open


@pytest.mark.parametrize(
    "rules, moment, is_open",
    [
        (["fri-mon 10:00-11:00"], at(SUN, 10, 30), True),
        (["fri-mon 10:00-11:00"], at(MON, 10, 30), True),
        (["fri-mon 10:00-11:00"], at(TUE, 10, 30), False),
        (["fri-mon 10:00-11:00"], at(THU, 10, 30), False),
        (["tue 00:00-24:00"], at(TUE, 0), True),
        (["tue 00:00-24:00"], at(TUE, 23, 59, 59), True),
        (["tue 00:00-24:00"], at(WED, 0), False),
        (["mon 08:00-12:00", "mon 13:00-18:00"], at(MON, 12, 30), False),
        (["mon 08:00-12:00", "mon 13:00-18:00"], at(MON, 13), True),
    ],
)
def test_hours_is_open_wrapping_and_split_days(rules, moment, is_open):
    assert OpeningHours.parse(rules).is_open(moment) is is_open


def test_hours_is_open_uses_the_wall_time_of_an_aware_datetime():
    hours = OpeningHours.parse(["mon 09:00-10:00"])
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2026, 11, 23, 9, 30, tzinfo=plus_two)  # 07:30 UTC
    assert hours.is_open(moment)
    assert not hours.is_open(moment.astimezone(dt.timezone.utc))
