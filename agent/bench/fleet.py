"""How many agents one broker carries: `agent.fleet.capacity`, once it exists."""

from __future__ import annotations

from typing import Any


def agents_per_broker(quick: bool) -> dict[str, Any]:
    try:
        from agent.fleet import capacity
    except ImportError:
        return {"fleet_agents_per_broker": float("nan"), "fleet_note": "agent.fleet.capacity not available yet"}
    return {"fleet_agents_per_broker": capacity(quick=quick)}
