"""A reader head: a Raspberry Pi Pico at the machine with an MFRC522, LEDs and a buzzer,
on USB serial, speaking the line protocol in `agent.hardware.headproto`.

The head is healthy while its lines keep arriving (it sends a heartbeat every
second); after `silence` seconds without one it is reported unhealthy, and
healthy again at its next line. Firmware and wiring: firmware/README.md.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gpiozero import Factory

from agent.config import ReaderConfig
from agent.core.model import BadBadge, Signal, normalise_badge
from agent.hardware import headproto
from agent.hardware.reader import TapDebouncer
from agent.hardware.serialport import SerialReader

log = logging.getLogger(__name__)


class HeadReader(SerialReader):
    name = "reader-head"
    default_port = "/dev/ttyACM0"

    def __init__(self, config: ReaderConfig, pins: Factory | None = None,
                 silence: float = headproto.SILENCE_S) -> None:
        super().__init__(config)
        self.silence = silence
        self.firmware: str | None = None
        self.head_dropped = 0  # lines the head dropped, from its heartbeat
        self.bad_uids = 0
        self._decoder = headproto.Decoder()
        self._debouncer = TapDebouncer(config.rearm)
        self._steady = Signal.IDLE  # shown again after the head restarts
        self._heard = 0.0  # when its last valid line arrived (or the port opened)
        self._beat_due = 0.0
        self._started = time.monotonic()

    @property
    def dropped(self) -> dict[str, int]:
        """Lines from the head this agent dropped, by reason."""
        return {**self._decoder.dropped, "bad_uid": self.bad_uids}

    @property
    def counters(self) -> dict[str, Any]:
        return {"firmware": self.firmware, "dropped": self.dropped, "head_dropped": self.head_dropped}

    def indicate(self, signal: Signal) -> None:
        if signal.value in headproto.STEADY:
            self._steady = signal
        self._write(headproto.encode(headproto.SHOW, signal.value))

    def _read_ok(self) -> None:
        """The head answers by its frames (`_received`), not by the port's reads."""

    def _connected(self) -> None:
        log.info("%s: opened %s, waiting for the head", self.name, self.port)
        self._heard = time.monotonic()
        self._beat_due = 0.0
        self._write(headproto.encode(headproto.SHOW, self._steady.value))

    def _tick(self, now: float) -> None:
        if now >= self._beat_due:
            self._beat_due = now + headproto.BEAT_INTERVAL_S
            uptime = int(now - self._started)
            self._write(headproto.encode(headproto.BEAT, uptime, self._decoder.total_dropped()))
        if now - self._heard > self.silence:
            detail = f"no heartbeat from the reader head on {self.port} for {self.silence:g} s"
            if self.healthy:
                log.warning("%s: %s", self.name, detail)
            self._report_health(False, detail)

    def _received(self, data: bytes, now: float) -> None:
        for kind, fields in self._decoder.feed(data):
            self._heard = now
            if not self.healthy:
                log.info("%s: the head on %s is answering", self.name, self.port)
            self._answering()
            if kind == headproto.CARD:
                self._card(fields[0], now)
            elif kind == headproto.BEAT and fields[1].isdigit():
                self.head_dropped = int(fields[1])
            elif kind == headproto.HELLO:
                self._hello(*fields[:2])

    def _card(self, uid: str, now: float) -> None:
        try:
            badge = normalise_badge(uid)
        except BadBadge as err:
            self.bad_uids += 1
            log.debug("%s: %s", self.name, err)
            return
        if self._debouncer.seen(badge, now):
            self._tap(badge)

    def _hello(self, firmware: str, protocol: str) -> None:
        self.firmware = firmware
        log.info("%s: head firmware %s, protocol %s", self.name, firmware, protocol)
        if protocol != str(headproto.PROTOCOL):
            log.warning("%s: the head speaks protocol %s, this agent %d; update one of them",
                        self.name, protocol, headproto.PROTOCOL)
        self._write(headproto.encode(headproto.SHOW, self._steady.value))
