"""What every benchmark shares: places to put storage, a machine config, a member
list of any size, a loopback Mosquitto, percentiles and the machine's description."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.devtools.machines import machine_toml

RAM_DIRS = ("/dev/shm", "/run/user/%d" % os.getuid(), "/tmp")
DISK_DIRS = ("/var/tmp", str(Path.home()), "/tmp")

# --- places ----------------------------------------------------------------------

def fs_type(path: Path | str) -> str:
    """The filesystem type of the mount holding `path`, from /proc/mounts ("unknown" elsewhere)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def _first_dir(candidates: tuple[str, ...], want: Callable[[str], bool]) -> str | None:
    for candidate in candidates:
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK) and want(fs_type(candidate)):
            return candidate
    return None


@contextmanager
def ram_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory on a RAM filesystem (tmpfs), removed afterwards."""
    base = _first_dir(RAM_DIRS, lambda kind: kind in ("tmpfs", "ramfs"))
    if base is None:
        raise RuntimeError("no writable RAM filesystem (tmpfs) found: tried " + ", ".join(RAM_DIRS))
    path = Path(tempfile.mkdtemp(prefix=f"fabpass-bench-{prefix}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def disk_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory on a real disk (not tmpfs), removed afterwards."""
    base = _first_dir(DISK_DIRS, lambda kind: kind not in ("tmpfs", "ramfs", "unknown"))
    base = base or _first_dir(DISK_DIRS, lambda kind: True)
    path = Path(tempfile.mkdtemp(prefix=f"fabpass-bench-{prefix}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def config_text(storage: Path, machine_id: str = "bench-1", broker_url: str | None = None,
                reader: dict[str, object] | None = None) -> str:
    """The bench's machine; `reader` adds keys to its [reader] section."""
    sections: dict[str, dict[str, object]] = {"mqtt": {"url": broker_url}} if broker_url else {}
    if reader:
        sections["reader"] = reader
    return machine_toml(machine_id, storage, machine={"name": "Benchmark laser"}, **sections)


def load_config(storage: Path, broker_url: str | None = None, simulate: bool = True, machine_id: str = "bench-1",
                reader: dict[str, object] | None = None):
    import dataclasses

    from agent.config import HardwareConfig, parse

    config = parse(config_text(storage, machine_id, broker_url=broker_url, reader=reader), "bench.toml")
    return dataclasses.replace(config, hardware=HardwareConfig(simulate=simulate))


def master_key_file(directory: Path) -> tuple[Path, bytes]:
    """Secure cards: a fresh master key in `directory`, in a file as a lab keeps it (mode
    0600); its path and the key."""
    master = os.urandom(16)
    path = directory / "card.key"
    path.touch(0o600)
    path.write_text(master.hex().upper() + "\n")
    return path, master


# --- a member list ------------------------------------------------------------------

def badges_of(index: int) -> tuple[str, str]:
    """Member `index`'s two badges: a 7-byte ISO 14443 UID and a 4-byte one, all distinct.

    Real UIDs are random, and the cache's index costs more to build for random
    keys than for counting ones: each index is multiplied by an odd constant,
    modulo the UID's range, which scatters them and keeps them distinct.
    """
    n = index + 1
    return f"04{n * 0x9E3779B97F4B % 2**48:012X}", f"{n * 0x9E3779B1 % 2**32:08X}"


def member_list(count: int, version: int = 1) -> bytes:
    """A JSON snapshot of `count` active members, two badges and three inductions each."""
    members = []
    for i in range(count):
        members.append({
            "id": f"m-{i:06d}", "name": f"Member {i}", "badges": list(badges_of(i)),
            "status": "active", "expires": "2099-12-31", "roles": ["staff"] if i % 50 == 0 else [],
            "inductions": {"laser": None, "cnc": "2099-06-30", "printer": None},
        })
    return json.dumps({"v": 1, "version": version, "generated_at": "2026-11-25T09:00:00Z",
                       "members": members}, separators=(",", ":")).encode()


# --- figures ---------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def calibration_ms() -> float:
    """How long this machine takes, right now, for a fixed piece of pure Python
    (JSON and dict work of the kind an apply does; best of three runs).

    A shared VM's speed drifts by a third within an hour; two bench runs are
    comparable only next to this figure, taken at the start and at the end.
    """
    record = {"id": "m-000001", "badges": ["04A1B2C3D4E5F6"], "status": "active",
              "inductions": {"laser": None, "cnc": "2099-06-30"}}
    text = json.dumps([record] * 2000)
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(5):
            members = json.loads(text)
            total = sum(len(m["badges"]) + len(m["inductions"]) for m in members if m["status"] == "active")
        best = min(best, time.perf_counter() - started)
    assert total == 6000
    return round(best * 1000, 2)


def machine() -> dict[str, object]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    model = value.strip()
                    break
    except OSError:
        pass
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"cpu": model, "cores": os.cpu_count(), "arch": platform.machine(),
            "kernel": platform.release(), "load_1m_at_start": load, "python": sys.version.split()[0]}
