"""Actors: the relay on the machine's power or enable line, the status LEDs and the buzzer.

Wiring (BCM numbers, as in the config): the relay board's IN to `relay.pin`;
most boards are active-low (`active_high = false`). LEDs through a 330 Ω
resistor to GND; an active buzzer to `indicators.buzzer`.
"""

from __future__ import annotations

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


# (led, on seconds, off seconds, times; None forever) and (buzzer on, off, times)
PATTERNS: dict[Signal, tuple[tuple[str, float, float, int | None] | None, tuple[float, float, int] | None]] = {
    Signal.GRANTED: (("green", 1.5, 0.0, 1), (0.08, 0.0, 1)),
    Signal.REFUSED: (("red", 0.15, 0.1, 4), (0.15, 0.1, 3)),
    Signal.ENDED: (("green", 0.1, 0.1, 2), (0.05, 0.05, 2)),
    Signal.WARNING: (("amber", 0.5, 0.5, None), (0.3, 0.7, 3)),
    Signal.OFFLINE: (("amber", 0.1, 2.9, None), None),
    Signal.IDLE: (None, None),
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
        led_pattern, buzz = PATTERNS[signal]
        for device in self.leds.values():
            if device is not None:
                device.off()
        if led_pattern is not None:
            name, on, off, times = led_pattern
            device = self.leds[name]
            if device is not None:
                device.blink(on_time=on, off_time=off, n=times, background=True)
        if buzz is not None and self.buzzer is not None:
            self.buzzer.beep(on_time=buzz[0], off_time=buzz[1], n=buzz[2], background=True)

    def beat(self) -> None:
        """Toggle the dead-man pin; a hardware watchdog drops the relay when this stops."""
        if self.heartbeat is not None:
            self.heartbeat.toggle()

    def close(self) -> None:
        for device in (*self.leds.values(), self.buzzer, self.heartbeat):
            if device is not None:
                device.close()
