"""The agent's clock: wall time for events and dates, monotonic time for durations."""

from __future__ import annotations

import datetime as dt
import time

from agent.core.session import Instant


def now() -> Instant:
    return Instant(dt.datetime.now(dt.timezone.utc), time.monotonic())
