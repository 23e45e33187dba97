"""The agent's clock: wall time for events and dates, monotonic time for durations,
and whether the wall time can be trusted.

A Raspberry Pi has no RTC: until NTP has set it, the clock may be days behind,
and an expired membership would look valid. Linux says so through adjtimex(2):
TIME_ERROR while unsynchronised. systemd-timesyncd also leaves a flag file once
it has synchronised the clock since boot. Anything else, an error above all,
is "not synchronised": a sandbox that hides the clock (systemd's
ProtectClock=yes makes even a read-only adjtimex fail with EPERM, systemd
issue #26413) must not make an untrusted clock look trusted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import errno
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.core.model import Instant

log = logging.getLogger(__name__)

TIME_ERROR = 5
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")  # systemd-timesyncd, once synchronised since boot


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


@functools.cache
def _adjtimex() -> Callable[..., int]:
    """libc's adjtimex, looked up once (find_library may run ldconfig)."""
    adjtimex = getattr(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True), "adjtimex", None)
    if adjtimex is None:
        raise OSError(errno.ENOSYS, "this system has no adjtimex")
    return adjtimex


def kernel_adjtimex() -> tuple[int, int]:
    """adjtimex(2) with modes = 0 (read only): (its return value, errno).

    glibc makes it the clock_adjtime syscall. Raises OSError where there is no
    such call (not Linux)."""
    adjtimex = _adjtimex()
    ctypes.set_errno(0)
    return adjtimex(ctypes.byref(_Timex())), ctypes.get_errno()


@dataclass(frozen=True)
class ClockState:
    """Whether the system clock is synchronised, which source said so, and why, for a person."""

    synchronised: bool
    source: str
    detail: str


def read_state(adjtimex: Callable[[], tuple[int, int]] = kernel_adjtimex, flag: Path | None = None) -> ClockState:
    """The system clock's state: synchronised when the kernel says so, or when
    systemd-timesyncd has synchronised it since boot; otherwise, and on any
    error, not synchronised."""
    flag = TIMESYNC_FLAG if flag is None else flag
    try:
        answer, err = adjtimex()
    except Exception as error:  # no libc, no call: nothing says the clock is right
        answer, err, why = -1, 0, f"cannot read the clock's state: {error}"
    else:
        why = ""
    if answer >= 0 and answer != TIME_ERROR:
        return ClockState(True, "adjtimex", "synchronised (the kernel says NTP has set it)")
    if os.path.exists(flag):  # False on any error
        return ClockState(True, "systemd-timesyncd", f"synchronised since boot ({flag} exists)")
    if answer == TIME_ERROR:
        return ClockState(False, "adjtimex", "not synchronised: no NTP server has set the clock since boot")
    if not why:
        why = f"cannot read the clock's state: adjtimex failed: {os.strerror(err)}"
        if err == errno.EPERM:
            why += (" (a sandbox hides the clock, such as systemd's ProtectClock=yes or a SystemCallFilter "
                    "without clock_adjtime)")
    return ClockState(False, "adjtimex", why)


class SystemClock:
    """The system clock's state, read at every call (a syscall: a microsecond),
    logged when it changes and at the first reading."""

    def __init__(self, read: Callable[[], ClockState] = read_state) -> None:
        self._read = read
        self._last: bool | None = None

    def state(self) -> ClockState:
        state = self._read()
        if state.synchronised != self._last:
            if state.synchronised:
                log.info("system clock synchronised (%s): %s", state.source, state.detail)
            else:
                log.warning("system clock NOT synchronised: %s", state.detail)
            self._last = state.synchronised
        return state

    def synchronised(self) -> bool:
        return self.state().synchronised
