"""How many agents one broker carries: `agent.fleet.capacity` (the fleet simulation's own measure).

It ramps a fleet of real in-process agents on a fresh loopback Mosquitto until
the p99 from tap to a subscriber receiving the event passes its threshold;
see agent/devtools/fleet/capacity.py. `--quick` runs its small CI configuration.
"""

from __future__ import annotations

from typing import Any


def agents_per_broker(quick: bool) -> dict[str, Any]:
    from agent.devtools.fleet import capacity

    figures = capacity(quick=quick).as_dict()
    # JSON has no infinity: a step where some event never arrived is shown as null.
    figures["fleet_p99_ms"] = {n: (p if p == p and abs(p) != float("inf") else None)
                               for n, p in figures.get("fleet_p99_ms", {}).items()}
    return figures
