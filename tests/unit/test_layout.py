"""The package's layout is its architecture: each folder a part, and each part imports
only the parts below it (type-only and function-level imports included), so there is
no cycle between parts and the pure core reaches no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "agent"
# Each part and the parts it may import. Listing them in this order proves there is no cycle.
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "signing": {"core"},
    "members": {"core", "signing"},
    "link": {"core", "signing"},
    "config": {"core", "signing", "link"},
    "hardware": {"core", "config"},
    "logs": set(),
    "logbook": {"core", "link"},
    "daemon": {"core", "signing", "members", "link", "config", "hardware"},
    # The lab side (members sync): reads the logbook for what machines granted, publishes lists.
    "labsync": {"core", "signing", "members", "link", "logbook"},
    "devtools": {"core", "signing", "members", "link", "config", "hardware", "logbook", "daemon"},
    "cli": {"core", "signing", "members", "link", "config", "hardware", "logbook", "labsync", "daemon",
            "devtools", "logs"},
}
# What the pure core may import: the standard library's data and time, no I/O.
CORE_STDLIB = {"__future__", "collections", "dataclasses", "datetime", "enum", "functools", "itertools",
               "math", "re", "types", "typing"}


def part_of(module: str) -> str | None:
    """`agent.core.session` -> `core`; the package itself (its __version__) belongs to no part."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "agent" else None


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "agent":  # from agent import x: x may be a part
                found |= {f"agent.{alias.name}" for alias in node.names}
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_layout_every_module_belongs_to_a_known_part() -> None:
    parts = {part_of(module_name(p)) for p in MODULES} - {None, "__main__"}
    assert parts == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layout_a_part_imports_only_the_parts_below_it(path: Path) -> None:
    part = part_of(module_name(path))
    if part in (None, "__main__"):
        return
    wrong = sorted(name for name in imports(path)
                   if (other := part_of(name)) not in (None, part) and other in LAYERS
                   and other not in LAYERS[part])
    assert not wrong, f"{part} may import only {sorted(LAYERS[part])}, not {wrong}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_layout_the_core_imports_no_io_hardware_or_transport(path: Path) -> None:
    outside = sorted(name for name in imports(path)
                     if part_of(name) != "core" and name.split(".")[0] not in CORE_STDLIB)
    assert not outside, f"the core is pure: {path.name} imports {outside}"


def test_layout_the_top_level_stays_small() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
