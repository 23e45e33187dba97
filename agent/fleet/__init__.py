"""A simulated fleet: many real agents, one broker, the real logbook, and a consistency check.

- `run_fleet(FleetOptions(...))`: `fabpass fleet` (agent/fleet/sim.py)
- `check(...)`: the pure consistency check (agent/fleet/check.py)
- `capacity(...)`: how many agents one local mosquitto serves (agent/fleet/capacity.py)
"""

from agent.fleet.capacity import Capacity, capacity
from agent.fleet.check import Consistency, RelayFault, check
from agent.fleet.sim import FleetOptions, run_fleet

__all__ = ["Capacity", "Consistency", "FleetOptions", "RelayFault", "capacity", "check", "run_fleet"]
