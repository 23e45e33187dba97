"""A reader on a serial port that stays open: a device that goes away is reopened with backoff.

USB-serial adapters and USB reader heads vanish when unplugged and come back
(often at the same path, always at the same udev symlink). The reader thread
never dies of it: it reports the reader unhealthy, waits (0.2 s, doubling up
to 5 s) and tries again until the device answers or the reader is closed.
"""

from __future__ import annotations

import logging
import threading
import time

import serial

from agent.config import ReaderConfig
from agent.hardware.reader import ThreadedReader

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.1  # bounds how long close() waits for the thread, and a stuck write


class SerialReader(ThreadedReader):
    """Base of the serial backends: owns the port and the open/read/reopen loop.

    Subclasses implement `_received(data, now)`, and may override `_connected()`
    (the port has just opened), `_read_ok()` (a read returned: by default the device
    counts as answering) and `_tick(now)` (called after every read, so at least every
    READ_TIMEOUT). `now` is time.monotonic(). A port that fails is reopened after the
    back-off, which restarts once the device answers.
    """

    default_port = "/dev/serial0"

    def __init__(self, config: ReaderConfig) -> None:
        super().__init__()
        self.config = config
        self.port = config.port or self.default_port
        self.healthy, self.detail = False, f"{self.port} not opened yet"
        self._serial: serial.SerialBase | None = None
        self._lock = threading.Lock()  # guards self._serial against writers on other threads

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                port = serial.serial_for_url(
                    self.port, baudrate=self.config.baudrate, timeout=READ_TIMEOUT, write_timeout=READ_TIMEOUT
                )
            except (serial.SerialException, OSError, ValueError) as err:
                self._stop.wait(self._lost(f"cannot open {self.port}: {err}"))
                continue
            with self._lock:
                self._serial = port
            try:
                self._connected()
                while not self._stop.is_set():
                    data = port.read(port.in_waiting or 1)
                    now = time.monotonic()
                    self._read_ok()
                    if data:
                        self._received(data, now)
                    self._tick(now)
            except (serial.SerialException, OSError) as err:
                # A port that opens and then fails must not be reopened at once, for ever.
                self._stop.wait(self._lost(f"{self.port} went away: {err}"))
            except Exception:  # a bug must not silence the reader for good
                log.exception("%s: unexpected error; reopening %s", self.name, self.port)
                self._stop.wait(self.BACKOFF_LONGEST)
            finally:
                self._release()

    def _received(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def _connected(self) -> None:
        log.info("%s: reading %s", self.name, self.port)

    def _read_ok(self) -> None:
        """A read returned: a reader that sends nothing until a card comes answers by that."""
        if not self.healthy:
            self._answering()

    def _tick(self, now: float) -> None:
        pass

    def _write(self, data: bytes) -> bool:
        """Send `data` if the port is open; False when it is not (the device is away)."""
        with self._lock:
            if self._serial is None:
                return False
            try:
                self._serial.write(data)
                return True
            except (serial.SerialException, OSError) as err:
                log.debug("%s: write failed: %s", self.name, err)
                return False

    def _release(self) -> None:
        with self._lock:
            port, self._serial = self._serial, None
        if port is not None:
            port.close()
