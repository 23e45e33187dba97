"""Durations ("90s", "4h") and points in time ("2026-11-25", "7d" ago)."""

from __future__ import annotations

import datetime as dt
import math
import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`: a number of seconds, or `90s`, `5m`, `4h`, `1h30m`, `7d`."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as '90s' or '4h', not a boolean")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"{text!r} is not a duration (a finite number of seconds, not negative)")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as '90s' or '4h', not {type(text).__name__}")
    compact = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(compact):
        raise ValueError(f"{text!r} is not a duration; write it like '90s', '15m', '4h' or '1h30m'")
    return total


def parse_time(text: str, now: dt.datetime, tz: dt.tzinfo | None = None) -> dt.datetime:
    """An aware datetime from an ISO date or date-time, or a span back from `now` (`7d`, `12h`).

    A bare date is its midnight, and naive date-times are taken in `tz` (default UTC).
    ValueError for anything else, and for a moment the calendar cannot hold in UTC
    (before year 1 or after 9999).
    """
    tz = tz or dt.timezone.utc
    text = text.strip()
    try:
        span = parse_duration(text)
    except ValueError:
        span = None
    try:
        if span is not None:
            moment = now - dt.timedelta(seconds=span)
        elif len(text) == 10:
            moment = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=tz)
        else:
            moment = dt.datetime.fromisoformat(text)
            moment = moment if moment.tzinfo else moment.replace(tzinfo=tz)
        moment.astimezone(dt.timezone.utc)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range (years 1 to 9999)") from None
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time; write an ISO date (2026-11-24), a date-time "
            "(2026-11-24T14:00) or a span back from now (7d, 12h)"
        ) from None
    return moment


class MissingOffset(ValueError):
    """A date-time without a UTC offset: which moment it means is not known."""


def parse_rfc3339(text: str) -> dt.datetime:
    """An aware datetime from an RFC 3339 time such as `2026-11-25T09:00:00.123Z`;
    ValueError when it is not one, MissingOffset when it has no UTC offset."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    moment = dt.datetime.fromisoformat(text.upper())  # RFC 3339 allows a lowercase t and z
    if moment.tzinfo is None:
        raise MissingOffset(f"{text!r} has no UTC offset")
    return moment


def rfc3339(moment: dt.datetime) -> str:
    """UTC, second precision with milliseconds, `Z` suffix: 2026-11-25T09:00:00.123Z."""
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
