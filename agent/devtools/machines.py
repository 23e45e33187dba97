"""The machine config that the demo, the fleet simulation, the benchmarks and the
tests start from: a simulated reader, the relay on BCM 17 (active-low unless
said otherwise), the given storage directory; any section can be added or
extended. The real one for a Pi comes from deploy/install.sh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string: any path or URL is safe


def machine_toml(machine_id: str, storage: Path | str, *, induction: str = "laser", active_high: bool = False,
                 extra: str = "", **sections: dict[str, Any]) -> str:
    """The config's TOML text. `sections` add keys to a section (`machine={"max_session":
    "4h"}`) or add a section (`mqtt={"url": …}`); `extra` is TOML appended as it is."""
    doc: dict[str, dict[str, Any]] = {
        "machine": {"id": machine_id, "induction": induction},
        "reader": {"type": "simulated"},
        "relay": {"pin": 17, "active_high": active_high},
        "storage": {"dir": str(storage)},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    text = "".join(f"[{name}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())
                   for name, values in doc.items())
    return text + extra
