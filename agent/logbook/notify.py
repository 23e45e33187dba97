"""Telling the technicians: messages sent through Apprise (Slack, Discord, Matrix,
e-mail, a JSON webhook…) on a thread of their own, rate-limited per subject.

`submit()` never blocks: a channel that is slow, hangs or fails delays only
this thread, never the collector that archives events. The queue is bounded;
what does not fit is dropped and counted. Each subject (a machine) gets at most
`per_window` messages per `window_s`; the next message after a quiet spell
says how many were held back, so a flapping Pi cannot flood a channel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

PER_WINDOW = 5
WINDOW_S = 900.0
QUEUE_SIZE = 1000


class BadNotifyURL(ValueError):
    pass


class RateLimit:
    """At most `per_window` messages per subject in any `window_s` (pure: the caller gives the time)."""

    def __init__(self, per_window: int = PER_WINDOW, window_s: float = WINDOW_S) -> None:
        self.per_window, self.window_s = per_window, window_s
        self._sent: dict[str, deque[float]] = defaultdict(deque)
        self._held: dict[str, int] = defaultdict(int)

    def allow(self, subject: str, now: float) -> int | None:
        """None when the message must be held back; else how many were held back before it."""
        sent = self._sent[subject]
        while sent and now - sent[0] >= self.window_s:
            sent.popleft()
        if len(sent) >= self.per_window:
            self._held[subject] += 1
            return None
        sent.append(now)
        return self._held.pop(subject, 0)


def apprise_sender(urls: Iterable[str]) -> Callable[[str, str], bool]:
    """A function that sends (title, body) to every URL; BadNotifyURL names a URL Apprise cannot use."""
    import apprise

    channels = apprise.Apprise()
    for url in urls:
        if not channels.add(url):
            raise BadNotifyURL(f"{url.split('://', 1)[0]}://…: not a notification URL Apprise knows")
    return lambda title, body: bool(channels.notify(body=body, title=title))


class Notifier:
    def __init__(self, send: Callable[[str, str], bool], limit: RateLimit | None = None,
                 clock: Callable[[], float] = time.monotonic, queue_size: int = QUEUE_SIZE) -> None:
        self._send, self._limit, self._clock = send, limit or RateLimit(), clock
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self.dropped = 0
        self.sent = 0

    def start(self) -> Notifier:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to `timeout` seconds, then give up on the rest."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)

    def submit(self, subject: str, title: str, body: str) -> None:
        try:
            self._queue.put_nowait((subject, title, body))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.error("notifications are not getting through: %d dropped so far", self.dropped)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            subject, title, body = item
            held = self._limit.allow(subject, self._clock())
            if held is None:
                log.info("notification held back (more than %d for %s in %.0f s): %s",
                         self._limit.per_window, subject, self._limit.window_s, title)
                continue
            if held:
                body += f"\n({held} earlier message(s) about {subject} were held back to avoid flooding)"
            try:
                ok = self._send(title, body)
            except Exception:  # a channel's failure must never end the thread
                log.exception("sending a notification failed: %s", title)
                continue
            if ok:
                self.sent += 1
            else:
                log.warning("a notification channel refused or failed: %s", title)
