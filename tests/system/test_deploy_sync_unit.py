"""deploy/fabpass-sync.service and .timer, checked by systemd-analyze verify."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.system.test_deploy_unit import settings

SERVICE = ROOT / "deploy" / "fabpass-sync.service"
TIMER = ROOT / "deploy" / "fabpass-sync.timer"


def verify(service_text: str, timer_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify on copies whose program (not installed here) is a stub."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: scripts/test installs Debian's systemd package")
    stub = tmp_path / "opt" / "fabpass" / "bin" / "fabpass"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    (tmp_path / "fabpass-sync.service").write_text(service_text.replace("/opt/fabpass/bin/fabpass", str(stub)))
    (tmp_path / "fabpass-sync.timer").write_text(timer_text)
    return subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "fabpass-sync.service"),
                           str(tmp_path / "fabpass-sync.timer")], capture_output=True, text=True, timeout=60)


def test_deploy_sync_unit_and_timer_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    done = verify(SERVICE.read_text(), TIMER.read_text(), tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


def test_deploy_sync_unit_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    done = verify(SERVICE.read_text().replace("Type=oneshot", "Type=oneshoot"),
                  TIMER.read_text().replace("OnUnitActiveSec=", "OnUnitActiveSecs="), tmp_path)
    assert "oneshoot" in done.stderr and "OnUnitActiveSecs" in done.stderr


def test_deploy_sync_unit_runs_one_sync_from_its_environment_file() -> None:
    unit = settings(SERVICE.read_text())
    assert {key: unit.get(key) for key in ("Type", "User", "EnvironmentFile", "ExecStart", "StateDirectory")} == {
        "Type": ["oneshot"], "User": ["fabpass"], "EnvironmentFile": ["/etc/fabpass/sync.env"],
        "ExecStart": ["/opt/fabpass/bin/fabpass members sync"], "StateDirectory": ["fabpass"]}
    documented = {line.split("=", 1)[0].lstrip("# ") for line in SERVICE.read_text().splitlines()
                  if line.startswith("#   FABPASS_")}
    from agent.cli.members import sync

    envvars = {option.envvar for option in sync.params if option.envvar}
    assert documented <= envvars, documented - envvars
    assert settings(TIMER.read_text())["OnUnitActiveSec"] == ["15min"]
