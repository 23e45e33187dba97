"""Opening hours: `["mon-fri 09:00-19:00", "sat 10:00-14:00"]`, in the machine's local time."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RULE = re.compile(r"([a-z]{3})(?:-([a-z]{3}))?\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")


@dataclass(frozen=True)
class Window:
    weekday: int  # Monday is 0
    start: dt.time
    end: dt.time  # exclusive; 24:00 is written as time.max


@dataclass(frozen=True)
class OpeningHours:
    windows: tuple[Window, ...]

    @classmethod
    def parse(cls, rules: list[str]) -> OpeningHours:
        if not isinstance(rules, list) or not rules:
            raise ValueError("expected a non-empty list such as ['mon-fri 09:00-19:00']")
        windows = []
        for rule in rules:
            match = _RULE.fullmatch(rule.strip().lower()) if isinstance(rule, str) else None
            if not match:
                raise ValueError(f"{rule!r} is not like 'mon-fri 09:00-19:00'")
            first, last, h1, m1, h2, m2 = match.groups()
            if first not in DAYS or (last and last not in DAYS):
                raise ValueError(f"{rule!r}: days are {', '.join(DAYS)}")
            start, end = _clock(h1, m1, rule), _clock(h2, m2, rule)
            if end <= start:
                raise ValueError(f"{rule!r}: the end must come after the start")
            a, b = DAYS.index(first), DAYS.index(last or first)
            days = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
            windows.extend(Window(day, start, end) for day in days)
        return cls(tuple(windows))

    def is_open(self, local: dt.datetime) -> bool:
        now = local.time()
        return any(w.weekday == local.weekday() and w.start <= now < w.end for w in self.windows)


def _clock(hours: str, minutes: str, rule: str) -> dt.time:
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return dt.time.max
    if h > 23 or m > 59:
        raise ValueError(f"{rule!r}: {hours}:{minutes} is not a time of day")
    return dt.time(h, m)
