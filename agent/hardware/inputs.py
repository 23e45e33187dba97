"""Sensors at the machine: the machine-running input, the out-of-order button and the
bypass key switch; each optional.

Wiring (BCM numbers, as in the config):
- `[sensor] pin`: a current sensor or the machine's busy output, through an
  optocoupler or comparator; `active_high` says which level means running.
- `[report] pin`: a push button between the pin and GND. The pin is pulled up,
  so pressed reads low.
- `[bypass] pin`: the spare contact of the key switch wired around the relay,
  between the pin and GND. Pulled up: closed (bypass on) reads low.

Every change of level is handed to `on_change(name, active)` from gpiozero's
thread. The agent's loop decides what it means (agent.core.session): the
button must be held, the key switch must settle, so a bouncing or stuck contact
never does more than a deliberate press and never switches the relay on.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from gpiozero import Button, DigitalInputDevice, Factory

from agent.config import Config

NAMES = ("sensor", "report", "bypass")
# gpiozero's debounce on real pins: a level must hold this long to be an edge. It only
# spares the loop an edge storm; MockPin ignores it, and the loop debounces anyway.
BOUNCE_S = 0.02


class MachineInputs:
    """The configured inputs of `config`, reporting to `on_change(name, active)`."""

    def __init__(self, config: Config, pins: Factory | None, on_change: Callable[[str, bool], None]) -> None:
        self.devices: dict[str, DigitalInputDevice] = {}
        # the level of each input when active: the button and the key switch close to GND
        self._active_high = {"sensor": config.sensor.active_high, "report": False, "bypass": False}
        if config.sensor.pin is not None:
            self.devices["sensor"] = DigitalInputDevice(config.sensor.pin, pull_up=None,
                                                        active_state=config.sensor.active_high, pin_factory=pins)
        if config.report.pin is not None:
            self.devices["report"] = Button(config.report.pin, pull_up=True, bounce_time=BOUNCE_S, pin_factory=pins)
        if config.bypass.pin is not None:
            self.devices["bypass"] = DigitalInputDevice(config.bypass.pin, pull_up=True, bounce_time=BOUNCE_S,
                                                        pin_factory=pins)
        for name, device in self.devices.items():
            device.when_activated = partial(on_change, name, True)
            device.when_deactivated = partial(on_change, name, False)

    def active(self, name: str) -> bool:
        """Whether input `name` is active now (running, pressed, bypass on); False when not configured."""
        device = self.devices.get(name)
        return device is not None and bool(device.value)

    def simulate(self, name: str, active: bool) -> None:
        """Drive a mock pin to the level that means `active`, as the part wired to it would
        (`fabpass input`). KeyError when `name` is not configured."""
        pin = self.devices[name].pin
        pin.drive_high() if active == self._active_high[name] else pin.drive_low()

    def close(self) -> None:
        for device in self.devices.values():
            device.close()
