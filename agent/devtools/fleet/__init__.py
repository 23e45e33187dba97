"""A simulated fleet: many real agents, one broker, the real logbook, and a consistency check.

- `run_fleet(FleetOptions(...))`: `fabpass fleet` (agent/devtools/fleet/sim.py)
- `check(...)`: the pure consistency check (agent/devtools/fleet/check.py)
- `capacity(...)`: how many agents one local mosquitto serves (agent/devtools/fleet/capacity.py)
"""

from agent.devtools.fleet.capacity import Capacity, capacity
from agent.devtools.fleet.check import Consistency, RelayFault, check
from agent.devtools.fleet.sim import FleetOptions, run_fleet

__all__ = ["Capacity", "Consistency", "FleetOptions", "RelayFault", "capacity", "check", "run_fleet"]
