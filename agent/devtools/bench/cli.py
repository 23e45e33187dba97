"""The command line's cold start: `fabpass status`, `tap` and `members check` as whole
processes, the way a technician or a script runs them.

Each is run `runs` times as `python -m agent …` (what the `fabpass` script does)
against an agent running in-process (simulated reader, storage on tmpfs,
1,000 members), and timed from the start of the process to its exit. The
figure is the slowest command's median; `python -c pass` gives the
interpreter's own start beside it. Python's compiled bytecode is kept between
runs, as an installed fabpass has it (pip compiles it at install), in a
directory of the bench's own (PYTHONPYCACHEPREFIX), after one run to warm it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from agent.devtools.bench.common import badges_of, config_text, member_list, ram_dir
from agent.devtools.bench.tap import TimedAgent, _apply


def _median_ms(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for run in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        if run:  # the first one warms the bytecode cache
            times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:])} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return round(statistics.median(times) * 1000, 1)


def cli_cold_start(runs: int) -> dict[str, Any]:
    with ram_dir("cli") as storage, TimedAgent(storage) as timed:
        _apply(timed.agent, member_list(1000))
        config = storage / "agent.toml"
        config.write_text(config_text(storage))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(storage / "pycache")
        badge = badges_of(7)[0]
        agent = [sys.executable, "-m", "agent"]
        figures = {
            "cli_status_ms": _median_ms([*agent, "status", "--config", str(config)], runs, env),
            "cli_tap_ms": _median_ms([*agent, "tap", badge, "--config", str(config)], runs, env),
            "cli_members_check_ms": _median_ms([*agent, "members", "check", badge, "--config", str(config)],
                                               runs, env),
        }
        figures["cli_cold_start_ms"] = max(figures.values())
        figures["cli_python_startup_ms"] = _median_ms([sys.executable, "-c", "pass"], runs, env)
        figures["cli_runs"] = runs
        return figures
