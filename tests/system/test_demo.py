"""`fabpass demo`, the newcomer's tour: it runs, shows what happens at the machine, and
says what the README says it does; its member list is the sample in config/."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from agent.devtools.demo import MEMBERS
from agent.members.snapshot import load_file, load_json
from tests.support import ROOT


def test_demo_the_sample_member_list_is_the_demos():
    sample = load_file(ROOT / "config" / "members.csv", version=1)
    assert list(sample.members()) == list(load_json(json.dumps(MEMBERS)).members())


def test_demo_runs_and_shows_an_induction_an_enrolment_and_a_printed_em4100_number():
    result = subprocess.run([sys.executable, "-m", "agent", "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"Alan Turing +taps CAFEBABE +-> inducted by trainer Katherine Johnson", out)
    assert re.search(r"Alan Turing +taps CAFEBABE +-> granted", out), "inducted, he may use the laser"
    assert re.search(r"Margaret Hamilton +taps 0A0045B352 +-> granted", out)
    assert re.search(r"Mary Jackson +taps 04D00D1E +-> badge enrolled for Mary Jackson", out)
    assert re.search(r"Mary Jackson +taps 04D00D1E +-> granted", out)
    readme = (ROOT / "README.md").read_text().split("printed as a timeline:", 1)[1].split("```")[1]
    shown = [line for line in readme.strip().splitlines() if line != "…"]
    assert shown and all(line in out.splitlines() for line in shown), "the README's timeline is not the demo's"
