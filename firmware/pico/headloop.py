"""The reader head's behaviour, with its I/O passed in, so it runs under CPython too.

Every `step` (main.py calls it every 10 ms): take the agent's lines, poll the
card reader every POLL_MS, send a heartbeat every second, set the LEDs and buzzer.
"""

try:
    import headproto  # on the board, copied beside this file by install.sh
except ImportError:
    from agent.hardware import headproto  # under CPython, from a fabpass checkout

from indicator import Indicator

FIRMWARE_VERSION = "pico-0.1.0"
POLL_MS = 100


def uid_hex(uid):
    return "".join(["%02X" % byte for byte in uid])


class Head:
    """`read_uid() -> bytes or None`, `write(bytes)`, `show(green, red, amber, buzzer)`."""

    def __init__(self, read_uid, write, show):
        self.read_uid, self.write, self.show = read_uid, write, show
        self.decoder = headproto.Decoder()
        self.indicator = Indicator()
        self.read_errors = 0
        self._heard_ms = None  # when the agent's last valid line arrived
        self._next_poll = self._next_beat = None

    def step(self, now_ms, incoming):
        if self._next_beat is None:
            self._hello()
            self._next_poll = self._next_beat = now_ms
        for kind, fields in self.decoder.feed(incoming):
            if not self.agent_alive(now_ms):
                self._hello()  # the agent (re)appeared: it may have missed our hello
            self._heard_ms = now_ms
            if kind == headproto.SHOW and fields[0] in headproto.SIGNALS:
                self.indicator.show(fields[0], now_ms)
        if now_ms >= self._next_poll:
            self._next_poll = now_ms + POLL_MS
            self._poll()
        if now_ms >= self._next_beat:
            self._next_beat = now_ms + int(headproto.BEAT_INTERVAL_S * 1000)
            self.write(headproto.encode(headproto.BEAT, now_ms // 1000, self.decoder.total_dropped()))
        self.show(*self.indicator.outputs(now_ms, self.agent_alive(now_ms)))

    def _hello(self):
        self.write(headproto.encode(headproto.HELLO, FIRMWARE_VERSION, headproto.PROTOCOL))

    def agent_alive(self, now_ms):
        return self._heard_ms is not None and now_ms - self._heard_ms <= headproto.SILENCE_S * 1000

    def _poll(self):
        try:
            uid = self.read_uid()
        except OSError:
            self.read_errors += 1
            return
        if uid:
            self.write(headproto.encode(headproto.CARD, uid_hex(uid)))
