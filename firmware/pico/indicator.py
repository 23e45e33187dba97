"""What the head's LEDs and buzzer do for each signal from the agent.

Steady signals (granted, warning, idle, offline) last until the next one;
refused, ended, enrolled, inducted and out_of_order play once, then the steady
state shows again (idle after ended and out_of_order: the session is over).
When the agent has been silent for headproto.SILENCE_S the head shows offline itself.
"""

TRANSIENT_MS = {"refused": 1500, "ended": 1000, "enrolled": 1800, "inducted": 2000, "out_of_order": 3000}
ENDS_SESSION = ("ended", "out_of_order")


def pattern(signal, ms):
    """(green, red, amber, buzzer) for `signal`, `ms` milliseconds after it began."""
    blink = (ms // 500) % 2 == 0
    if signal == "granted":
        return (True, False, False, ms < 150)  # green, one short beep
    if signal == "refused":
        return (False, True, False, ms < 120 or 240 <= ms < 360)  # red, two beeps
    if signal == "ended":
        return (False, False, True, ms < 400)  # amber, one long beep
    if signal == "warning":
        return (True, False, blink, ms < 3000 and ms % 1000 < 100)  # green + blinking amber, three beeps
    if signal == "offline":
        return (False, blink, False, False)  # blinking red
    if signal == "enrolled":
        return ((ms // 300) % 2 == 0, False, False, ms < 400)  # green blinks three times, one long beep
    if signal == "inducted":
        return (True, False, True, ms < 150 or 250 <= ms < 400)  # green and amber, two beeps
    if signal == "out_of_order":
        return (False, True, False, ms < 1000)  # red, one long beep
    return (ms % 2000 < 80, False, False, False)  # idle: a green wink every two seconds


class Indicator:
    def __init__(self):
        self.steady, self.steady_ms = "idle", 0
        self.transient, self.transient_ms = None, 0

    def show(self, signal, now_ms):
        if signal in TRANSIENT_MS:
            self.transient, self.transient_ms = signal, now_ms
            if signal in ENDS_SESSION:
                self.steady, self.steady_ms = "idle", now_ms
        else:
            self.steady, self.steady_ms = signal, now_ms
            self.transient = None

    def outputs(self, now_ms, agent_alive):
        if not agent_alive:
            return pattern("offline", now_ms)
        if self.transient is not None and now_ms - self.transient_ms < TRANSIENT_MS[self.transient]:
            return pattern(self.transient, now_ms - self.transient_ms)
        return pattern(self.steady, now_ms - self.steady_ms)
