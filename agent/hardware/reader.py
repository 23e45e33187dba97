"""The reader interface that every backend implements, and what they share: the tap
debouncer, a thread that never dies of a fault, and health with back-off."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.core.model import Signal

if TYPE_CHECKING:
    from agent.hardware.securecard import CardCheck

log = logging.getLogger(__name__)

TapHandler = Callable[..., None]  # on_tap(badge), or on_tap(badge, check) from a reader that authenticates
HealthHandler = Callable[[bool, "str | None"], None]


class Reader(ABC):
    """An initiator: reports badges presented to it.

    `start` begins reporting: `on_tap(badge)` is called once per presentation
    with a normalised badge (see `agent.core.model.normalise_badge`), from the
    reader's own thread; `on_health(ok, detail)` when the reader stops or
    resumes answering. `close` is idempotent and stops the thread.

    A reader that `authenticates` cards (secure cards, agent.hardware.securecard)
    calls `on_tap(badge, check)` with the CardCheck of the presentation.
    """

    name = "reader"
    authenticates = False

    def __init__(self) -> None:
        self._on_tap: TapHandler = lambda badge: None
        self._on_health: HealthHandler = lambda ok, detail: None
        self.healthy = True
        self.detail: str | None = None

    def start(self, on_tap: TapHandler, on_health: HealthHandler | None = None) -> None:
        self._on_tap = on_tap
        if on_health is not None:
            self._on_health = on_health
        self._start()

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def indicate(self, signal: Signal) -> None:
        """Show `signal` on the reader itself, for readers that have LEDs (a reader head)."""

    @property
    def counters(self) -> dict[str, Any]:
        """What the reader has dropped or learnt (bad frames, firmware), for the status."""
        return {}

    def _report_health(self, ok: bool, detail: str | None = None) -> None:
        if ok != self.healthy or detail != self.detail:
            self.healthy, self.detail = ok, detail
            self._on_health(ok, detail)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TapDebouncer:
    """Turns a stream of sightings into taps: a card held on a reader is one tap.

    `seen(badge, now)` is True when this sighting starts a new presentation:
    a different card, or the same card after more than `rearm` seconds in which
    nothing was on the reader. `present(now)` says a card answered but could not
    be read (RF noise, a bad checksum): the held card is still there, so a read
    that fails is no gap, and only `rearm` of silence ends a presentation.
    `now` is a monotonic clock.
    """

    def __init__(self, rearm: float) -> None:
        self.rearm = rearm
        self._badge: str | None = None
        self._last = float("-inf")

    def seen(self, badge: str, now: float) -> bool:
        new = badge != self._badge or now - self._last > self.rearm
        self._badge, self._last = badge, now
        return new

    def present(self, now: float) -> None:
        if self.holding(now):
            self._last = now

    def forget(self) -> None:
        """The last sighting did not count (the reader failed while checking it)."""
        self._badge, self._last = None, float("-inf")

    def holding(self, now: float) -> bool:
        """A presentation is going on: a card was on the reader within `rearm`."""
        return self._badge is not None and now - self._last <= self.rearm


class ThreadedReader(Reader):
    """A reader whose backend runs a blocking loop in a daemon thread.

    A device that stops answering is reported unhealthy (`_lost`) and tried
    again after a back-off that doubles from BACKOFF_FIRST to BACKOFF_LONGEST,
    and reset once it answers (`_answering`). A tap handler that fails costs
    that tap, never the thread (`_tap`).
    """

    BACKOFF_FIRST = 0.2
    BACKOFF_LONGEST = 5.0

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = self.BACKOFF_FIRST

    def _tap(self, badge: str, check: CardCheck | None = None) -> None:
        try:
            if check is None:
                self._on_tap(badge)
            else:
                self._on_tap(badge, check)
        except Exception:
            log.exception("%s: the tap handler failed for %s", self.name, badge)

    def _lost(self, detail: str) -> float:
        """Report the device unhealthy (logged once per distinct detail); returns how
        long to wait before trying it again."""
        if self.healthy or detail != self.detail:
            log.warning("%s: %s; retrying", self.name, detail)
        self._report_health(False, detail)
        delay, self._backoff = self._backoff, min(self._backoff * 2, self.BACKOFF_LONGEST)
        return delay

    def _answering(self) -> None:
        """The device answers: healthy, and the next fault starts the back-off afresh."""
        self._backoff = self.BACKOFF_FIRST
        self._report_health(True)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    @abstractmethod
    def _run(self) -> None:
        """The loop; return when `self._stop` is set."""

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._release()

    def _release(self) -> None:
        """Free the device (serial port, SPI); called once the loop has ended."""
