"""`fabpass bench`: every contract figure is present and a number (not its value: machines differ),
and the pieces the figures rest on measure what they say."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.cli.bench import table
from agent.devtools.bench import FIGURES, TARGETS, target_text, verdict
from agent.devtools.bench.common import (
    badges_of,
    fs_type,
    member_list,
    percentile,
    ram_dir,
)

CONTRACT_KEYS = ("tap_to_relay_p50_ms", "tap_to_relay_p99_ms", "members_apply_100k_s", "lookup_during_apply_p99_ms",
                 "outbox_replay_events_per_s", "idle_cpu_percent", "idle_rss_mb", "members_apply_100k_peak_mb",
                 "outbox_commit_p99_ms", "fleet_agents_per_broker",
                 "card_to_relay_p50_ms", "card_to_relay_p99_ms", "reader_idle_cpu_percent")
# Figures of the bench's own beyond the contract's.
MORE_KEYS = ("serial_frame_end_to_relay_p99_ms", "cli_cold_start_ms",
             "card_to_relay_secure_p50_ms", "card_to_relay_secure_p99_ms", "idle_rss_secure_mb")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_bench_quick_json_has_every_contract_figure_as_a_number() -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "bench", "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "cannot reach broker" not in done.stderr  # the replay's outage is planned, not news
    figures = json.loads(done.stdout)  # one JSON document (NaN would not parse as strict JSON below)
    json.loads(done.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the output"))
    for key in CONTRACT_KEYS + MORE_KEYS:
        assert key in figures, key
        assert _number(figures[key]), (key, figures[key])
    assert isinstance(figures["outbox_commit_fs"], str) and figures["outbox_commit_fs"]
    assert figures["outbox_commit_fs"] not in ("tmpfs", "ramfs")
    assert figures["tap_to_relay_fs"] in ("tmpfs", "ramfs")
    assert figures["quick"] is True
    assert figures["python"] == sys.version.split()[0]
    assert figures["machine"]["cores"] >= 1
    assert _number(figures["machine"]["calibration_start_ms"]) and figures["machine"]["calibration_end_ms"] > 0
    assert figures["members_apply_members"] == 100_000
    assert figures["outbox_replay_events"] >= 2_000
    for key in ARCHIVE_KEYS:
        assert _number(figures[key]), (key, figures[key])


ARCHIVE_KEYS = ("outbox_bytes_per_event", "heartbeat_bytes_per_hour", "archive_catch_up_events_per_s")


def test_bench_figures_cover_the_contract() -> None:
    assert set(FIGURES) == set(CONTRACT_KEYS) | set(MORE_KEYS) | set(ARCHIVE_KEYS)
    assert set(TARGETS) <= set(FIGURES)


def test_bench_bytes_written_are_counted_on_a_real_disk_per_event_and_per_heartbeat() -> None:
    """The SD card figures: /proc/PID/io of a real `fabpass run` whose events a real logbook
    confirms, one tap at a time; a heartbeat's commit in this process."""
    from agent.devtools.bench import archive

    per_event = archive.outbox_bytes(taps=6)
    assert per_event["outbox_bytes_events"] == 6 and per_event["outbox_bytes_fs"] not in ("tmpfs", "ramfs")
    assert 0 < per_event["outbox_wchar_per_event"] and 0 < per_event["outbox_bytes_per_event"]
    beat = archive.heartbeat_bytes(commits=20)
    assert 0 < beat["heartbeat_bytes"] and beat["heartbeat_bytes_per_hour"] == pytest.approx(
        beat["heartbeat_bytes"] * 3600 / 55, rel=0.01)


def test_bench_catch_up_counts_every_event_of_a_late_logbook() -> None:
    from agent.devtools.bench import archive

    result = archive.archive_catch_up(machines=2, events=30)
    assert result["archive_catch_up_events"] == 2 * (30 + 1), "each agent's agent_started too"
    assert result["archive_catch_up_events_per_s"] > 0


def test_bench_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_bench_verdicts_against_targets() -> None:
    assert verdict("tap_to_relay_p99_ms", 0.4) == "ok"
    assert verdict("tap_to_relay_p99_ms", 0.5) == "MISS"
    assert verdict("outbox_replay_events_per_s", 5000) == "ok"
    assert verdict("outbox_replay_events_per_s", 4999) == "MISS"
    assert verdict("outbox_commit_p99_ms", 50.0) == ""
    assert verdict("card_to_relay_p99_ms", 30.0) == "ok"  # at most 30 ms
    assert verdict("card_to_relay_p99_ms", 30.01) == "MISS"
    assert target_text("idle_rss_mb") == "< 40"
    assert target_text("fleet_agents_per_broker") == "-"


def test_bench_member_list_is_a_valid_snapshot_with_two_badges_and_three_inductions() -> None:
    from agent.members.snapshot import load_json

    snapshot = load_json(member_list(120, version=7))
    members = list(snapshot.members())
    assert snapshot.version == 7 and snapshot.count == 120
    assert all(len(m.badges) == 2 and len(m.inductions) == 3 and "laser" in m.inductions for m in members)
    assert len({b for m in members for b in m.badges}) == 240
    assert members[5].badges == badges_of(5)


def test_bench_ram_dir_is_tmpfs_and_removed(tmp_path: Path) -> None:
    with ram_dir("test") as path:
        assert fs_type(path) in ("tmpfs", "ramfs")
        (path / "x").write_text("x")
    assert not path.exists()
    assert fs_type("/proc") == "proc"


def test_bench_tap_to_relay_times_the_relay_changing_and_stops_its_agent() -> None:
    from agent.devtools.bench.tap import tap_to_relay

    before = threading.active_count()
    figures = tap_to_relay(taps=20, members=200)
    assert figures["tap_to_relay_taps"] == 20
    assert 0 < figures["tap_to_relay_p50_ms"] <= figures["tap_to_relay_p99_ms"] <= figures["tap_to_relay_max_ms"]
    assert threading.active_count() == before


def test_bench_timed_agent_every_tap_changes_the_relay() -> None:
    from agent.devtools.bench.tap import TimedAgent, _apply

    with ram_dir("test") as storage, TimedAgent(storage) as timed:
        _apply(timed.agent, member_list(10))
        for _ in range(3):
            timed.tap(badges_of(4)[1])
            assert timed.agent.relay.on
            timed.tap(badges_of(4)[0])  # the same member's other badge ends the session
            assert not timed.agent.relay.on
        states = [s.state for s in timed.pin.states][-7:]  # after the mock pin's own initial state
        assert states == [True, False, True, False, True, False, True]  # active-low: on is low
        events = [e for _, e in timed.agent.outbox.pending(0, 100)]
        assert sum('"session_started"' in e for e in events) == 3  # the outbox write is on the path


def test_bench_card_to_relay_goes_through_the_mfrc522_reader_and_stops_its_agent() -> None:
    from agent.devtools.bench.card import mfrc522

    before, modules = threading.active_count(), set(sys.modules)
    figures = mfrc522(presentations=4, idle_s=0.5, members=50)
    assert figures["card_to_relay_cards"] == 4
    # A card answers 5 ms after it enters the field, and a 7-byte UID takes 4 ms on the air.
    assert 9 < figures["card_to_relay_p50_ms"] <= figures["card_to_relay_p99_ms"] <= figures["card_to_relay_max_ms"]
    assert figures["reader_idle_transfers_per_look"] == 5 and figures["reader_idle_looks_per_s"] > 10
    assert 0 < figures["reader_idle_cpu_percent"] <= figures["reader_idle_thread_cpu_percent"]
    assert threading.active_count() == before
    assert "spidev" not in sys.modules and set(sys.modules) - modules <= {m for m in sys.modules if "agent" in m
                                                                            or m.startswith("gpiozero")}


def test_bench_secure_card_to_relay_authenticates_every_tap_and_stops_its_agent() -> None:
    from agent.devtools.bench.card import secure_card_to_relay

    before = threading.active_count()
    figures = secure_card_to_relay(presentations=4, members=50)
    assert figures["card_to_relay_secure_cards"] == 4  # each changed the relay: each card authenticated
    # The card's start-up (5 ms), the UID's read (4 ms) and the check's frames on the air (17 ms).
    assert 26 < figures["card_to_relay_secure_p50_ms"] <= figures["card_to_relay_secure_p99_ms"] \
        <= figures["card_to_relay_secure_max_ms"]
    assert "NTAG 424 DNA" in figures["card_to_relay_secure_model"]
    assert threading.active_count() == before
    assert not {"spidev", "RPi", "RPi.GPIO", "mfrc522"} & set(sys.modules)  # the doubles and the driver are gone


def test_bench_serial_frames_go_through_both_serial_readers() -> None:
    from agent.devtools.bench.serial import serial_frames

    before = threading.active_count()
    figures = serial_frames(4)
    assert 0 < figures["rdm6300_frame_end_to_relay_p50_ms"] <= figures["rdm6300_frame_end_to_relay_p99_ms"]
    assert 0 < figures["head_frame_end_to_relay_p50_ms"] <= figures["head_frame_end_to_relay_p99_ms"]
    assert figures["serial_frame_end_to_relay_p99_ms"] == max(figures["rdm6300_frame_end_to_relay_p99_ms"],
                                                             figures["head_frame_end_to_relay_p99_ms"])
    assert threading.active_count() == before


def test_bench_cli_cold_start_runs_each_command_against_an_agent() -> None:
    from agent.devtools.bench.cli import cli_cold_start

    figures = cli_cold_start(runs=1)  # a command that failed would raise, naming it
    assert figures["cli_cold_start_ms"] == max(figures["cli_status_ms"], figures["cli_tap_ms"],
                                               figures["cli_members_check_ms"])
    assert figures["cli_cold_start_ms"] > figures["cli_python_startup_ms"] > 0


def test_bench_peers_recreations_decide_as_their_originals(tmp_path: Path) -> None:
    from agent.devtools.bench.peers.makerspace_auth import MakerspaceAuth
    from agent.devtools.bench.peers.ratt import Ratt, hash_tag

    auth = MakerspaceAuth(tmp_path, ["04A1B2C3D4E5F6", "C1A2B3D4"])
    assert auth.decide("C1A2B3D4") and not auth.decide("C1A2B3") and not auth.decide("DEADBEEF")
    assert (tmp_path / "log.txt").read_text().count("LaserCutter1,15m") == 3  # every badge logged, as theirs
    assert hash_tag(12345) == "c7cc92db7e8170d693d1a97705f74d92f7f2bc5d6220b1ca73909521"  # sha224 of "0000012345"
    ratt = Ratt([12345, 0xC1A2B3D4])
    assert ratt.decide(0xC1A2B3D4) and not ratt.decide(54321)


def test_bench_peers_compare_all_three_paths_in_one_run() -> None:
    from agent.devtools.bench.peers import compare

    before = threading.active_count()
    figures = compare(rounds=6, members=300)
    for name in ("fabpass", "makerspace_auth", "ratt"):
        assert 0 < figures[f"peers_{name}_p50_ms"] <= figures[f"peers_{name}_p99_ms"]
    assert figures["peers_members"] == 300 and figures["peers_rounds"] == 6
    assert threading.active_count() == before


def test_bench_without_the_mfrc522_driver_says_how_to_get_it_before_measuring() -> None:
    code = ("import sys; sys.modules['mfrc522'] = None\n"  # as where the driver is not installed
            "from agent.cli import main; main(['bench', '--quick'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "pip install --no-deps 'mfrc522==0.0.7'" in done.stderr and "measuring" not in done.stderr


def test_bench_table_names_each_figure_value_and_target() -> None:
    figures = {key: 1.0 for key in FIGURES}
    figures.update(quick=True, python="3.11.7", outbox_commit_fs="ext4",
                   machine={"cpu": "Test CPU", "cores": 2, "arch": "x86_64", "kernel": "6.1",
                            "calibration_start_ms": 15.2, "calibration_end_ms": 31.0})
    text = table(figures)
    assert "--quick" in text.splitlines()[0]
    assert "Test CPU, 2 cores" in text
    assert "calibration 15.2 ms at the start, 31.0 ms at the end" in text
    for key in FIGURES:
        assert key in text
    assert "(ext4)" in text and "< 0.5" in text
