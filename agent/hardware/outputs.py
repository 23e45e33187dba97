"""Actors: the relay on the machine's power or enable line, the status LEDs and the buzzer.

Wiring (BCM numbers, as in the config): the relay board's IN to `relay.pin`;
most boards are active-low (`active_high = false`). LEDs through a 330 Ω
resistor to GND; an active buzzer to `indicators.buzzer`.
"""

from __future__ import annotations

from typing import NamedTuple

from gpiozero import LED, Buzzer, DigitalOutputDevice, Factory, OutputDevice

from agent.config import IndicatorConfig, RelayConfig
from agent.core.model import Signal


class MachineRelay:
    """The relay. Off when created, and off again on close()."""

    def __init__(self, config: RelayConfig, pins: Factory | None = None) -> None:
        self.device = OutputDevice(config.pin, active_high=config.active_high,
                                   initial_value=False, pin_factory=pins)

    @property
    def on(self) -> bool:
        return bool(self.device.value)

    def switch(self, on: bool) -> None:
        if on:
            self.device.on()
        else:
            self.device.off()

    def close(self) -> None:
        try:
            self.device.off()
        finally:
            self.device.close()


class Pattern(NamedTuple):
    """What a signal shows: `leds` lit together, blinking `on`/`off` seconds `times` times
    (None: until the next signal), and the buzzer's (on, off, times), if it sounds."""

    leds: tuple[str, ...] = ()
    on: float = 0.0
    off: float = 0.0
    times: int | None = 1
    beep: tuple[float, float, int] | None = None


# Each answer its own pattern (README, "What a member sees"); the reader head's firmware
# (firmware/pico/indicator.py) shows the same signals in its own way.
PATTERNS: dict[Signal, Pattern] = {
    Signal.GRANTED: Pattern(("green",), 1.5, 0.0, 1, (0.08, 0.0, 1)),
    Signal.REFUSED: Pattern(("red",), 0.15, 0.1, 4, (0.15, 0.1, 3)),
    Signal.ENDED: Pattern(("green",), 0.1, 0.1, 2, (0.05, 0.05, 2)),
    Signal.WARNING: Pattern(("amber",), 0.5, 0.5, None, (0.3, 0.7, 3)),
    Signal.OFFLINE: Pattern(("amber",), 0.1, 2.9, None),
    Signal.IDLE: Pattern(),
    # at the machine
    Signal.ENROLLED: Pattern(("green",), 0.3, 0.3, 3, (0.4, 0.0, 1)),
    Signal.INDUCTED: Pattern(("green", "amber"), 2.0, 0.0, 1, (0.15, 0.1, 2)),
    Signal.OUT_OF_ORDER: Pattern(("red",), 3.0, 0.0, 1, (1.0, 0.0, 1)),
}


class Indicators:
    """Status LEDs (green granted, red refused, amber warning/offline) and a buzzer; each optional."""

    def __init__(self, config: IndicatorConfig, pins: Factory | None = None) -> None:
        def led(pin: int | None) -> LED | None:
            return LED(pin, active_high=config.active_high, pin_factory=pins) if pin is not None else None

        self.leds = {name: led(getattr(config, name)) for name in ("green", "red", "amber")}
        self.buzzer = Buzzer(config.buzzer, pin_factory=pins) if config.buzzer is not None else None
        self.heartbeat = (DigitalOutputDevice(config.heartbeat, pin_factory=pins)
                          if config.heartbeat is not None else None)

    def show(self, signal: Signal) -> None:
        pattern = PATTERNS[signal]
        for device in self.leds.values():
            if device is not None:
                device.off()
        for name in pattern.leds:
            device = self.leds[name]
            if device is not None:
                device.blink(on_time=pattern.on, off_time=pattern.off, n=pattern.times, background=True)
        if pattern.beep is not None and self.buzzer is not None:
            on, off, times = pattern.beep
            self.buzzer.beep(on_time=on, off_time=off, n=times, background=True)

    def beat(self) -> None:
        """Toggle the dead-man pin; a hardware watchdog drops the relay when this stops."""
        if self.heartbeat is not None:
            self.heartbeat.toggle()

    def close(self) -> None:
        for device in (*self.leds.values(), self.buzzer, self.heartbeat):
            if device is not None:
                device.close()
