"""fabpass's decision path beside two peers', measured side by side in one run.

- fabpass: a tap to the relay pin changing (TimedAgent, as tap_to_relay: the
  lookup, the rules, the durable event, the relay), storage on tmpfs;
- makerspace-auth: its per-badge check (makerspace_auth.py): a bash process
  that stamps the time, appends to its log and greps the list of badges,
  in a directory on the same tmpfs;
- RATT: its lookup alone (ratt.py): SHA-224 of the tag, a linear scan.

All three hold the same `members` members and decide for members picked at
random. They take turns by blocks of BLOCK decisions (each path runs alone in
its block, as each runs alone on its own device, with its caches warm), so
that the host's drift weighs on all three alike; the ratios are each peer's
median over fabpass's. `python -m agent.devtools.bench.peers [ROUNDS
[MEMBERS]]` prints them.
"""

from __future__ import annotations

import random
import time
from typing import Any

from agent.devtools.bench.common import badges_of, member_list, percentile, ram_dir
from agent.devtools.bench.peers.makerspace_auth import MakerspaceAuth
from agent.devtools.bench.peers.ratt import Ratt
from agent.devtools.bench.tap import TimedAgent, _apply

BLOCK = 50


def _timed(decide: Any, badge: Any) -> float:
    start = time.perf_counter()
    if not decide(badge):
        raise RuntimeError(f"the peer refused member badge {badge}: its list is not the members'")
    return time.perf_counter() - start


def compare(rounds: int, members: int, seed: int = 6) -> dict[str, Any]:
    rng = random.Random(seed)
    badges = [badges_of(i) for i in range(members)]
    ratt = Ratt([int(short, 16) for _, short in badges])
    times: dict[str, list[float]] = {"fabpass": [], "makerspace_auth": [], "ratt": []}
    with ram_dir("peers") as storage, ram_dir("peers-ma") as directory, TimedAgent(storage) as timed:
        _apply(timed.agent, member_list(members))
        auth = MakerspaceAuth(directory, [long for long, _ in badges])

        def fabpass(member: int) -> float:
            badge = badges[member][0]
            took = timed.tap(badge)
            timed.settle()
            timed.tap(badge)  # and off again, untimed, as a member ends the session
            timed.settle()
            return took

        # Each path reads a member's badge as its system keeps it: a 7-byte UID in
        # fabpass's and makerspace-auth's lists, a 32-bit tag number in RATT's.
        paths = {"fabpass": fabpass,
                 "makerspace_auth": lambda member: _timed(auth.decide, badges[member][0]),
                 "ratt": lambda member: _timed(ratt.decide, int(badges[member][1], 16))}
        for start in range(0, rounds, BLOCK):
            picks = [rng.randrange(members) for _ in range(min(BLOCK, rounds - start))]
            for name, decide in paths.items():
                times[name] += [decide(member) for member in picks]
    p50 = {name: percentile(values, 50) for name, values in times.items()}
    figures: dict[str, Any] = {}
    for name, values in times.items():
        figures[f"peers_{name}_p50_ms"] = round(p50[name] * 1000, 3)
        figures[f"peers_{name}_p99_ms"] = round(percentile(values, 99) * 1000, 3)
    figures["peers_makerspace_auth_ratio"] = round(p50["makerspace_auth"] / p50["fabpass"], 1)
    figures["peers_ratt_ratio"] = round(p50["ratt"] / p50["fabpass"], 1)
    figures.update(peers_members=members, peers_rounds=rounds)
    return figures

