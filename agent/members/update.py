"""Writing a member list into the cache, here or in a child process.

Either way the version must grow (VersionNotNewer otherwise) and a list that
cannot be used leaves the cache untouched. What the agent does with the
outcome (events, the list's age) is `agent.daemon.listsync`'s business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.members.badgehash import BadgeHasher
from agent.members.cache import MemberCache, VersionNotNewer


@dataclass(frozen=True)
class Updated:
    version: int
    count: int


class ListError(ValueError):
    """A list that was refused; `version` when it was readable."""

    def __init__(self, message: str, version: int | None) -> None:
        super().__init__(message)
        self.version = version


def update_cache(cache: MemberCache, load: Callable[[], Any], hasher: BadgeHasher | None = None) -> Updated:
    """Parse with `load` and write the cache in this process.

    Raises VersionNotNewer, or ValueError/OSError/sqlite3.Error for a list
    that cannot be used (then the cache is untouched). With `hasher`, the
    cache keeps only the keyed hashes of the list's badges.
    """
    snapshot = load()
    if hasher is not None:
        snapshot = hasher.snapshot(snapshot)
    return Updated(snapshot.version, cache.replace(snapshot))


def update_cache_in_child(directory: Path, payload: bytes, public_key: str | None = None,
                          hash_key_file: str | None = None, timeout: float = 600.0) -> Updated:
    """The same, in a child process (`python -m agent.members.updater`): parsing
    100,000 members holds the GIL for seconds, and taps must not wait for it."""
    command = [sys.executable, "-m", "agent.members.updater", str(directory)]
    if public_key:
        command += ["--public-key", public_key]
    if hash_key_file:
        command += ["--hash-key-file", hash_key_file]
    try:
        child = subprocess.run(command, input=payload, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OSError(f"updating the member cache took over {timeout:.0f} s") from None
    try:
        answer = json.loads(child.stdout)
    except ValueError:
        raise OSError(f"the member cache updater failed: {child.stderr.decode(errors='replace')[-500:]}") from None
    if "cached" in answer:
        raise VersionNotNewer(answer["version"], answer["cached"])
    if answer.get("storage"):
        raise OSError(answer["error"])
    if "error" in answer:
        raise ListError(answer["error"], answer.get("version"))
    return Updated(answer["version"], answer["count"])
