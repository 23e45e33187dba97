"""The agent's clock: wall time for events and dates, monotonic time for durations,
and whether the wall time can be trusted.

A Raspberry Pi has no RTC: until NTP has set it, the clock may be days behind,
and an expired membership would look valid. Linux says so through
adjtimex(2): TIME_ERROR while unsynchronised."""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import logging
import sys
import time

from agent.core.model import Instant

log = logging.getLogger(__name__)

TIME_ERROR = 5


def now() -> Instant:
    return Instant(dt.datetime.now(dt.timezone.utc), time.monotonic())


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; only `modes` is written (0: read only).
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("reserved", ctypes.c_int * 11)]


class SystemClock:
    """`synchronised()` asks the kernel; True where it cannot tell (not Linux)."""

    def __init__(self) -> None:
        self._adjtimex = None
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            self._adjtimex = libc.adjtimex
        self._last: bool | None = None

    def synchronised(self) -> bool:
        if self._adjtimex is None:
            return True
        synced = self._adjtimex(ctypes.byref(_Timex())) != TIME_ERROR
        if synced != self._last:
            (log.info if synced else log.warning)(
                "system clock %s", "synchronised" if synced else
                "NOT synchronised: members with expiry dates and machines with opening hours are "
                "refused (clock_unsynchronised) until it is")
            self._last = synced
        return synced


class SimulatedClock:
    """In simulation the host's clock is trusted."""

    def synchronised(self) -> bool:
        return True
