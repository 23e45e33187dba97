"""The rule for a new list's version: it only grows, and two lists made in the same
second still differ (milliseconds, and one more than the retained version)."""

from __future__ import annotations

import datetime as dt

MAX_VERSION = 2**53 - 1  # the largest integer every JSON reader keeps exactly


def next_version(retained: int | None, now: dt.datetime) -> int:
    """The larger of `now` in Unix milliseconds and the retained version + 1."""
    return max(int(now.timestamp() * 1000), (retained or 0) + 1)
