"""agent.hardware.outputs.Indicators on gpiozero's mock pins: each signal its own pattern."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from agent.config import IndicatorConfig
from agent.core.model import Signal
from agent.hardware.outputs import PATTERNS, Indicators
from tests.support.helpers import wait_for

PINS = {"green": 5, "red": 6, "amber": 13, "buzzer": 19}


def test_indicators_every_signal_has_its_own_pattern():
    assert set(PATTERNS) == set(Signal)
    shown = [p for s, p in PATTERNS.items() if s is not Signal.IDLE]
    assert len(set(shown)) == len(shown), "two signals look and sound the same"


def rises(pin) -> int:
    return sum(1 for before, after in zip(pin.states, pin.states[1:]) if not before.state and after.state)


@pytest.mark.parametrize("signal", [Signal.ENROLLED, Signal.INDUCTED, Signal.OUT_OF_ORDER])
def test_indicators_at_the_machine_light_and_sound_as_their_pattern_says(signal):
    pins = MockFactory(pin_class=MockPWMPin)
    indicators = Indicators(IndicatorConfig(**PINS), pins)
    try:
        pattern = PATTERNS[signal]
        indicators.show(signal)
        expected = {name: pattern.times if name in pattern.leds else 0 for name in ("green", "red", "amber")}
        expected["buzzer"] = pattern.beep[2]
        wait_for(lambda: all(rises(pins.pin(PINS[n])) >= k for n, k in expected.items()), 10, f"{signal} to play")
        last = sum(pattern.beep[:2]) * pattern.beep[2] + (pattern.on + pattern.off) * pattern.times
        wait_for(lambda: not any(pins.pin(p).state for p in PINS.values()), last + 5, f"{signal} to finish")
        assert {n: rises(pins.pin(PINS[n])) for n in expected} == expected
    finally:
        indicators.close()
