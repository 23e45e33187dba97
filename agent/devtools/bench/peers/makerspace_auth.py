"""makerspace-auth's decision path, re-created: a bash script run per badge.

Origin: google/makerspace-auth (Apache License 2.0, "Copyright 2017 Google
Inc."). Its dispatcher (`software/two_button.py`, `Dispatcher.badge_scan`) runs
the configured `[auth] command` for every badge read, with
`subprocess.call`; the shipped configuration (`software/two_button.ini`) makes
that `bash sample_auth_check.sh {badge} {tool} {duration}`, and that script
(`software/sample_auth_check.sh`, commit 1a00c24f) stamps the time with
`date`, appends a line to `log.txt` and greps `authorized.txt` for the badge as
a whole word; its exit status is the decision. This module writes fabpass's own
script doing those same steps (nothing of theirs is copied or fetched) and
runs it as the dispatcher would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = """#!/bin/bash
# The per-badge check of makerspace-auth, re-created for fabpass's benchmark:
# stamp, log, then look the badge up as a whole word. Exit 0: granted.
set -eu
badge=$1
when=$(date)
echo "$when,$badge,$2,$3" >> log.txt
grep -qw "$badge" authorized.txt
"""


class MakerspaceAuth:
    """A directory holding the script, its list of authorized badges and its log."""

    def __init__(self, directory: Path, badges: list[str], tool: str = "LaserCutter1") -> None:
        self.directory, self.tool = directory, tool
        (directory / "check.sh").write_text(SCRIPT)
        (directory / "authorized.txt").write_text("".join(badge + "\n" for badge in badges))

    def decide(self, badge: str) -> bool:
        return subprocess.call(["bash", "check.sh", badge, self.tool, "15m"], cwd=self.directory) == 0
