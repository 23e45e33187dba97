"""A member list's version: an integer from 1 to 2^53-1 that only grows.

2^53-1 is the largest integer every JSON reader keeps exactly (a JavaScript
number, a double). Below it, a version made from the clock in milliseconds
(13 digits today) leaves room for 285,000 years of lists, and a list can
never be given a version that nothing can follow.
"""

from __future__ import annotations

import datetime as dt

MAX_VERSION = 2**53 - 1


class VersionError(ValueError):
    """A version out of range, or one that does not follow the retained list's."""


def shown(version: int) -> str:
    """A version for a message: a number thousands of digits long is not printed whole."""
    text = str(version)
    return text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"


def check_version(version: object) -> int:
    """`version` when it is an integer from 1 to MAX_VERSION; VersionError otherwise."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise VersionError(f"version {version!r} must be a positive integer")
    if version > MAX_VERSION:
        raise VersionError(f"version {shown(version)} is above 2^53-1 ({MAX_VERSION}), the largest a list may have")
    return version


def blocks(retained: int | None) -> bool:
    """Whether a retained (or cached) version bars the versions up to it. One above
    MAX_VERSION (taken before versions were bounded) bars nothing: agents ignore it, and
    otherwise no list could ever follow it."""
    return retained is not None and retained <= MAX_VERSION


def next_version(retained: int | None, now: dt.datetime) -> int:
    """The version of a list published at `now` after the `retained` one: the Unix
    time in milliseconds, or the retained version + 1 when that is larger (two lists
    in the same millisecond, a retained version from a clock ahead or a date)."""
    version = int(now.timestamp() * 1000)
    if blocks(retained):
        version = max(version, retained + 1)
    if version > MAX_VERSION:
        raise VersionError(f"the retained version {shown(retained)} leaves no version up to 2^53-1 "
                           f"({MAX_VERSION}) to follow it")
    return version


def check_follows(version: int, retained: int | None, what: str = "version") -> None:
    """VersionError unless `version` is above the `retained` one (naming both), where
    that one `blocks`."""
    if blocks(retained) and version <= retained:
        raise VersionError(f"{what} {shown(version)} is not above the retained version {shown(retained)}: "
                           "agents would refuse it")
