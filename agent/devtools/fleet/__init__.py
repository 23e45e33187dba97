"""A simulated fleet: many real agents, one broker, the real logbook, and a consistency check.

- `run_fleet(FleetOptions(...))`: `fabpass fleet` (agent/devtools/fleet/sim.py)
- `check(...)`: the pure consistency check (agent/devtools/fleet/check.py)
"""

from agent.devtools.fleet.check import Consistency, RelayFault, check
from agent.devtools.fleet.sim import FleetOptions, run_fleet

__all__ = ["Consistency", "FleetOptions", "RelayFault", "check", "run_fleet"]
