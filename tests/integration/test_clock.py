"""A Pi without an RTC boots with a wrong date: date rules must not grant on an untrusted clock."""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import errno
import json
import os
import subprocess
import sys

import pytest

from agent.core.hours import OpeningHours
from agent.core.model import Member, Reason
from agent.core.policy import Rules, Situation, decide
from agent.daemon.clock import SystemClock, read_state
from tests.support import ROOT, noclock
from tests.support.agents import (
    ADA,
    GRACE,
    AgentProcess,
    FakeClock,
    RunningAgent,
    config_text,
    members_json,
)
from tests.support.helpers import wait_for

NOW = dt.datetime(2026, 11, 25, 10, 0)
UNTRUSTED = Situation(clock_trusted=False)


def member(expires=None, induction_until=None, staff=False) -> Member:
    return Member(id="m", name="M", status="active", expires=expires,
                  roles=frozenset({"staff"} if staff else ()), inductions={"laser": induction_until})


@pytest.mark.parametrize("who, rules, expected", [
    (member(), Rules("laser"), None),  # no date rule applies: granted
    (member(expires=dt.date(2030, 1, 1)), Rules("laser"), Reason.CLOCK_UNSYNCHRONISED),
    (member(induction_until=dt.date(2030, 1, 1)), Rules("laser"), Reason.CLOCK_UNSYNCHRONISED),
    (member(), Rules("laser", OpeningHours.parse(["mon-sun 00:00-24:00"])), Reason.CLOCK_UNSYNCHRONISED),
    (member(staff=True), Rules("laser", OpeningHours.parse(["mon-fri 09:00-10:00"])), None),  # staff ignore hours
    (member(staff=True, expires=dt.date(2030, 1, 1)), Rules("laser"), Reason.CLOCK_UNSYNCHRONISED),
])
def test_clock_untrusted_refuses_only_where_a_date_rule_applies(who, rules, expected):
    decision = decide(who, rules, UNTRUSTED, NOW)
    assert decision.reason == expected
    assert decision.granted == (expected is None)


def test_clock_untrusted_keeps_the_precedence_of_earlier_refusals():
    suspended = Member(id="s", name="S", status="suspended", expires=dt.date(2030, 1, 1), inductions={})
    assert decide(suspended, Rules("laser"), UNTRUSTED, NOW).reason == Reason.SUSPENDED
    assert decide(None, Rules("laser"), UNTRUSTED, NOW).reason == Reason.UNKNOWN_BADGE


class Clock:
    """A system clock whose state the test sets."""

    def __init__(self, synchronised: bool) -> None:
        self.synced = synchronised

    def synchronised(self) -> bool:
        return self.synced


def test_clock_daemon_refuses_a_member_with_an_expiry_until_the_clock_is_synchronised(tmp_path):
    agent = RunningAgent(config_text(tmp_path), simulate=False)
    clock = agent.agent.clock_status = Clock(False)
    try:
        members = [{"id": "ada", "name": "Ada", "badges": [ADA], "status": "active", "expires": "2030-01-01",
                    "roles": [], "inductions": {"laser": None}}]
        agent.apply(members_json(members=members))
        answer = agent.tap(ADA)
        assert answer["reason"] == "clock_unsynchronised" and not agent.relay_is_on()
        clock.synced = True
        assert agent.tap(ADA)["action"] == "started"
    finally:
        agent.stop()


def test_clock_synchronised_at_last_is_published_in_the_status(tmp_path, mosquitto):
    """A Pi that booted without NTP: once the clock is synchronised, the retained status
    (the fleet view, Home Assistant) says so without waiting for a tap."""
    from agent.link.broker import Broker
    from agent.link.retained import read_retained

    clock = FakeClock()
    agent = RunningAgent(config_text(tmp_path, extra=f'[mqtt]\nurl = "{mosquitto.url}"\n'), clock=clock,
                         simulate=False, connect=True)
    state = agent.agent.clock_status = Clock(False)
    broker, topic = Broker.parse(mosquitto.url), "fabpass/machines/laser-1/status"

    def published() -> dict | None:
        payload = read_retained(broker, topic, 2.0)
        return json.loads(payload) if payload else None

    try:
        agent.agent.call(agent.agent.status_changed)
        wait_for(lambda: (published() or {}).get("clock_synchronised") is False, 10, "the first status")
        state.synced = True
        clock.advance(11)  # past the loop's look at the clock
        agent.tick()
        wait_for(lambda: (published() or {}).get("clock_synchronised") is True, 10, "the status to follow the clock")
    finally:
        agent.stop()


@pytest.mark.parametrize("simulate, setting, granted", [
    (False, "", False),                      # hardware: the clock must be synchronised
    (False, "require_sync = true", False),
    (False, "require_sync = false", True),   # a Pi with an RTC: the clock is trusted as it is
    (True, "", True),                        # simulation trusts the host's clock...
    (True, "require_sync = true", False),    # ...unless the config says otherwise
])
def test_clock_require_sync_decides_whether_an_unsynchronised_clock_is_trusted(tmp_path, simulate, setting,
                                                                              granted):
    agent = RunningAgent(config_text(tmp_path, extra=f"[clock]\n{setting}\n"), simulate=simulate)
    agent.agent.clock_status = Clock(False)
    try:
        members = [{"id": "ada", "name": "Ada", "badges": [ADA], "status": "active", "expires": "2030-01-01",
                    "roles": [], "inductions": {"laser": None}}]
        agent.apply(members_json(members=members))
        assert agent.tap(ADA)["granted"] is granted
        status = agent.agent.call(agent.agent.status)
        assert (status["clock_synchronised"], status["clock_trusted"]) == (False, granted)
    finally:
        agent.stop()


def test_clock_system_clock_answers_a_boolean():
    assert isinstance(SystemClock().synchronised(), bool)


# --- the clock's state fails closed (issue 17, finding 1) ----------------------------------------

NOCLOCK = [sys.executable, "-m", "tests.support.noclock", "--"]
needs_seccomp = pytest.mark.skipif(not noclock.supported(), reason="the clock syscalls' numbers are known "
                                   f"for {', '.join(noclock.CLOCK_SYSCALLS)} only")


def without_clock_syscalls(code: str) -> subprocess.CompletedProcess:
    """`code` in a Python whose clock syscalls fail with EPERM, as under ProtectClock=yes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*NOCLOCK, sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=env, cwd=ROOT)


@needs_seccomp
def test_clock_the_filter_really_refuses_adjtimex_with_eperm():
    """The seam is the kernel's: a real seccomp filter, as systemd's ProtectClock= installs."""
    done = without_clock_syscalls(
        "import ctypes, ctypes.util\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
        "print(libc.adjtimex(ctypes.create_string_buffer(512)), ctypes.get_errno())")
    assert done.stdout.split() == ["-1", str(errno.EPERM)], done.stderr


@needs_seccomp
def test_clock_a_kernel_that_refuses_to_say_counts_as_not_synchronised(tmp_path):
    """ProtectClock=yes (systemd#26413) makes even a read-only adjtimex fail with EPERM;
    an error is not a synchronised clock."""
    done = without_clock_syscalls(
        "from pathlib import Path\n"
        "from agent.daemon import clock\n"
        f"clock.TIMESYNC_FLAG = Path({str(tmp_path / 'no-such-flag')!r})\n"
        "print(clock.SystemClock().synchronised())")
    assert done.stdout.strip() == "False", done.stdout + done.stderr


@needs_seccomp
def test_clock_systemd_timesyncd_flag_is_a_source_of_truth_when_the_kernel_cannot_be_asked(tmp_path):
    flag = tmp_path / "synchronized"
    flag.touch()
    done = without_clock_syscalls(
        "from pathlib import Path\n"
        "from agent.daemon.clock import read_state\n"
        f"state = read_state(flag=Path({str(flag)!r}))\n"
        "print(state.synchronised, state.source)")
    assert done.stdout.split() == ["True", "systemd-timesyncd"], done.stdout + done.stderr


def test_clock_state_follows_the_kernel_when_it_answers(tmp_path):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    kernel = libc.adjtimex(ctypes.create_string_buffer(512))
    assert kernel >= 0
    state = read_state(flag=tmp_path / "no-such-flag")
    assert state.synchronised == (kernel != 5)  # TIME_ERROR
    assert state.source == "adjtimex" and state.detail


@pytest.mark.parametrize("answer, synchronised, words", [
    ((0, 0), True, "synchronised"),                      # TIME_OK
    ((1, 0), True, "synchronised"),                      # TIME_INS: a leap second pending, still in sync
    ((5, 0), False, "not synchronised"),                 # TIME_ERROR
    ((-1, errno.EPERM), False, "ProtectClock"),          # the sandbox
    ((-1, errno.ENOSYS), False, "cannot read"),
])
def test_clock_state_from_each_kernel_answer(tmp_path, answer, synchronised, words):
    state = read_state(adjtimex=lambda: answer, flag=tmp_path / "no-such-flag")
    assert state.synchronised is synchronised and words in state.detail


def test_clock_state_an_exception_is_not_synchronised(tmp_path):
    def broken() -> tuple[int, int]:
        raise OSError("libc not found")

    assert read_state(adjtimex=broken, flag=tmp_path / "none").synchronised is False


@needs_seccomp
def test_clock_agent_under_protectclock_refuses_dated_members_and_says_so(tmp_path):
    """End to end: `fabpass run` in a process whose clock syscalls fail, as the unit of
    systemd 252 made them. Dated rules refuse, undated members are served, the status
    and the journal tell the technician why."""
    storage = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(config_text(storage, extra="[clock]\nrequire_sync = true\n"))
    members = tmp_path / "members.json"
    dated = [{"id": "ada", "name": "Ada", "badges": [ADA], "status": "active", "expires": "2030-01-01",
              "roles": [], "inductions": {"laser": None}},
             {"id": "grace", "name": "Grace", "badges": [GRACE], "status": "active", "expires": None,
              "roles": [], "inductions": {"laser": None}}]
    members.write_bytes(members_json(members=dated))
    agent = AgentProcess(config, storage, env={"PYTHONPATH": str(ROOT), "TZ": "UTC"}, wrapper=NOCLOCK)
    try:
        agent.start()
        assert agent.ask({"op": "import", "path": str(members), "version": None})["applied"]
        assert agent.ask({"op": "tap", "badge": ADA})["reason"] == "clock_unsynchronised"
        assert agent.ask({"op": "tap", "badge": GRACE})["action"] == "started"
        status = agent.ask({"op": "status"})
        assert status["clock_synchronised"] is False and status["clock_trusted"] is False
    finally:
        agent.stop()
    log = agent.log.read_text()
    assert "clock NOT synchronised" in log and "Operation not permitted" in log, log
