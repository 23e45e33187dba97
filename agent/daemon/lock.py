"""The lock on a storage directory: one agent per storage, whatever the config says.

A second `fabpass run` on a directory in use (the same config started twice,
a service and a test run side by side) must not touch anything of the first:
not its relay pin, not its open session, not its control socket. It takes
this lock before anything else and exits when it cannot. `flock` on
`DIR/agent.lock`: the kernel releases it when the process ends, however it
ends (SIGKILL, a power cut), so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "agent.lock"


class StorageInUse(RuntimeError):
    """Another agent holds the storage directory."""


class StorageLock:
    """Held from construction until `release()` (idempotent) or the end of the process."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
            self.release()
            raise StorageInUse(f"{self.directory} is in use by another fabpass agent"
                               + (f" (pid {holder})" if holder else "")
                               + "; stop it first, or give this machine its own [storage] dir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
