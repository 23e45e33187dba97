"""The simulated reader: taps come from `fabpass tap`, `sim/tap` or a test, never debounced."""

from __future__ import annotations

from agent.core.model import normalise_badge
from agent.hardware.reader import Reader


class SimulatedReader(Reader):
    name = "simulated-reader"

    def _start(self) -> None:
        self._report_health(True)

    def present(self, badge: str) -> None:
        """A discrete tap of `badge` (any accepted spelling)."""
        self._on_tap(normalise_badge(badge))

    def close(self) -> None:
        pass
