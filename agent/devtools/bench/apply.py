"""Applying a big member list to the cache: parse + validate + write, and its peak memory.

The measurement runs in a fresh subprocess that does only that
(`python -m agent.devtools.bench.apply SNAPSHOT DIR`), so the peak is the apply's own:
the RSS high-water mark (VmHWM) after the apply minus the RSS (VmRSS) once
the modules are imported and before the snapshot file is read. The high-water
mark is reset first (/proc/self/clear_refs), so importing cannot inflate it.
The peak includes the snapshot's bytes, as the agent holds the MQTT payload.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.devtools.bench.common import disk_dir, fs_type, member_list


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_high_water() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def child(snapshot_path: Path, storage: Path) -> dict[str, Any]:
    """The measured part: read the file, parse and validate it, write the cache."""
    import gc

    from agent.members.cache import MemberCache
    from agent.members.snapshot import load_json

    cache = MemberCache(storage)
    gc.collect()
    reset = _reset_high_water()
    baseline = _status_kb("VmRSS")
    start = time.perf_counter()
    # As the agent's updater process does for a list from the broker (agent/members/updater.py).
    count = cache.replace(load_json(snapshot_path.read_bytes(), check_members=False))
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    cache.close()
    return {"seconds": seconds, "count": count, "baseline_kb": baseline, "peak_kb": peak,
            "high_water_reset": reset}


def _apply_once(snapshot: Path, storage: Path, members: int) -> dict[str, Any]:
    storage.mkdir()
    done = subprocess.run([sys.executable, "-m", "agent.devtools.bench.apply", str(snapshot), str(storage)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the apply subprocess failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout)
    if result["count"] != members:
        raise RuntimeError(f"applied {result['count']} members, expected {members}")
    return result


def members_apply(members: int, runs: int = 1) -> dict[str, Any]:
    """Apply the list `runs` times, each in a fresh process: the figure is the median
    run (a shared machine's noise is large), with the fastest and slowest beside it."""
    with disk_dir("apply") as work:
        snapshot = work / "members.json"
        snapshot.write_bytes(member_list(members))
        results = [_apply_once(snapshot, work / f"storage-{run}", members) for run in range(runs)]
        size_mb, fs = snapshot.stat().st_size / 2**20, fs_type(work)
    seconds = sorted(result["seconds"] * 100_000 / members for result in results)
    peak_mb = max(result["peak_kb"] - result["baseline_kb"] for result in results) / 1024
    reset = all(result["high_water_reset"] for result in results)
    return {
        "members_apply_100k_s": round(seconds[len(seconds) // 2], 3),
        "members_apply_100k_s_min": round(seconds[0], 3),
        "members_apply_100k_s_max": round(seconds[-1], 3),
        "members_apply_runs": runs,
        "members_apply_100k_peak_mb": round(peak_mb, 1),
        "members_apply_members": members,
        "members_apply_snapshot_mb": round(size_mb, 1),
        "members_apply_fs": fs,
        "members_apply_peak_method": "VmHWM - VmRSS before, fresh subprocess, highest run"
                                     + ("" if reset else " (high-water mark not reset)"),
    }


if __name__ == "__main__":
    print(json.dumps(child(Path(sys.argv[1]), Path(sys.argv[2]))))
