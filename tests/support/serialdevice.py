"""A pretend USB-serial device for reader tests: a pseudo-terminal reached through a
stable path (a symlink, like a udev name) that can be unplugged and plugged in again."""

from __future__ import annotations

import os
import select
import tty
from pathlib import Path


class SerialDevice:
    """The test holds the master end; the backend opens `path` (the slave) with pyserial."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master: int | None = None
        self._slave: int | None = None
        self.plug()

    def plug(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing before the backend configures it
        self.path.symlink_to(os.ttyname(self._slave))

    def unplug(self) -> None:
        """The device vanishes: the backend's open port fails and its path is gone."""
        self.path.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    def write(self, data: bytes) -> None:
        assert self.master is not None, "the device is unplugged"
        os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        """Whatever the backend has sent, waiting at most `timeout` for the first byte."""
        assert self.master is not None, "the device is unplugged"
        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, 4096) if ready else b""

    def close(self) -> None:
        self.unplug()
