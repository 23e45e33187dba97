"""`fabpass fleet`: real agents, a real Mosquitto and the real logbook, then the consistency check;
the check itself on planted inconsistencies; the capacity figure for the bench."""

from __future__ import annotations

import json
import math
import random

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.devtools.bench.capacity import capacity
from agent.devtools.fleet import FleetOptions, RelayFault, check, run_fleet
from agent.devtools.fleet import population as pop
from agent.devtools.fleet.check import Happening

# -- the whole fleet -------------------------------------------------------------------


def test_fleet_twenty_machines_for_thirty_seconds_are_consistent() -> None:
    result = CliRunner().invoke(main, ["fleet", "--machines", "20", "--duration", "30", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["consistent"] is True, report["problems"]
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["conflicting"] == 0
    assert report["events_sent"] == report["events_archived"] > 0
    assert report["machines"] == 20
    assert report["refused"] > 0 and len(report["refused_by_reason"]) >= 3
    assert report["actions"]["started"] > 0 and report["actions"]["ended"] > 0
    assert report["sessions_open"] == 0 and report["relay_faults"] == 0
    assert report["incarnations"] == 20 and report["chaos"] == []


def test_fleet_chaos_still_archives_every_event_of_every_incarnation_exactly_once() -> None:
    """kill -9 of agents and of the logbook, a broker that forgets, a wiped SD card, a logbook
    started late, two agents sharing an id: the archive holds exactly what each made."""
    result = CliRunner().invoke(main, ["fleet", "--machines", "4", "--duration", "40", "--chaos", "--seed", "2",
                                       "--json"])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0 and report["consistent"] is True, report["problems"]
    assert {h["scenario"] for h in report["chaos"]} == {
        "late_logbook", "kill_agent", "kill_logbook", "broker_forgets", "wipe_storage", "twin"}
    assert not [h for h in report["chaos"] if h["failure"]]
    assert report["incarnations"] == 4 + 1 + 1, "a wiped card and a twin: two more incarnations"
    assert report["lost"] == report["duplicated"] == report["conflicting"] == report["unexpected"] == 0
    assert report["events_sent"] == report["events_archived"] > 0


def test_fleet_broker_outages_lose_nothing() -> None:
    report = run_fleet(FleetOptions(machines=4, duration=10, outages=2, outage_s=1.5, seed=7))
    assert report["outages"] == 2
    assert report["consistent"] is True, report["problems"]
    assert report["events_sent"] == report["events_archived"] > 0


def test_fleet_on_a_given_broker_is_consistent(mosquitto) -> None:
    report = run_fleet(FleetOptions(machines=3, duration=4, broker_url=mosquitto.url, seed=3))
    assert report["consistent"] is True, report["problems"]
    assert report["broker"] == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert report["events_sent"] == report["events_archived"] > 0


def test_fleet_outages_need_the_local_broker() -> None:
    result = CliRunner().invoke(main, ["fleet", "--machines", "2", "--duration", "2",
                                       "--broker", "mqtt://127.0.0.1:1", "--outages", "1"])
    assert result.exit_code == 2
    assert "--outages" in result.output


# -- the check on planted data ------------------------------------------------------------

MADE = {("sim-01", "a"): 3, ("sim-02", "b"): 1, ("sim-02", "c"): 1}  # sim-02: a wiped card, two incarnations
GOOD = [("sim-01", "a", 1, "a1"), ("sim-01", "a", 2, "a2"), ("sim-01", "a", 3, "a3"),
        ("sim-02", "b", 1, "b1"), ("sim-02", "c", 1, "c1")]


def test_fleet_check_passes_complete_data() -> None:
    result = check(MADE, GOOD, observed=GOOD + [("sim-01", "a", 2, "a2")])  # a redelivery is fine
    assert result.consistent
    assert result.as_dict()["events_sent"] == result.as_dict()["events_archived"] == 5
    assert result.as_dict()["incarnations"] == 3
    assert result.problems() == []


def test_fleet_check_finds_a_missing_seq_of_any_incarnation() -> None:
    result = check(MADE, [r for r in GOOD if r[:2] != ("sim-02", "c")])
    assert not result.consistent
    assert result.lost == [("sim-02", "c", 1)]
    assert result.as_dict()["lost"] == 1 and result.problems() == ["lost: sim-02 seq 1 (incarnation c)"]


def test_fleet_check_finds_a_duplicated_event_id() -> None:
    result = check(MADE, GOOD + [("sim-01", "a", 3, "a3")])
    assert not result.consistent
    assert result.duplicated == ["a3"] and result.as_dict()["duplicated"] == 1


def test_fleet_check_finds_a_seq_under_two_event_ids() -> None:
    in_archive = check(MADE, GOOD + [("sim-02", "b", 1, "b1-again")])
    on_the_wire = check(MADE, GOOD, observed=[("sim-02", "b", 1, "b1-again")])
    for result in (in_archive, on_the_wire):
        assert not result.consistent
        assert result.conflicting == [("sim-02", "b", 1)]


def test_fleet_check_finds_an_event_never_made() -> None:
    result = check(MADE, GOOD + [("sim-02", "c", 2, "c2"), ("sim-99", "z", 1, "z1")])
    assert result.unexpected == [("sim-02", "c", 2), ("sim-99", "z", 1)]
    assert not result.consistent


def test_fleet_check_finds_an_open_session_a_relay_fault_and_a_failed_scenario() -> None:
    assert not check(MADE, GOOD, open_sessions=[("sim-01", "m-0001")]).consistent
    fault = RelayFault("sim-02", relay_on=True, in_session=False, when="sweep")
    assert check(MADE, GOOD, relay_faults=[fault]).problems() == ["sim-02: relay on without a session (sweep)"]
    twin = Happening("twin", "sim-01", 10.0, 20.0, failure="neither agent reported the conflict")
    failed = check(MADE, GOOD, happenings=[twin])
    assert not failed.consistent and failed.problems() == ["twin sim-01 at 10.0 s: neither agent reported the conflict"]


def test_fleet_check_says_which_scenario_was_under_way_when_an_event_went_missing() -> None:
    happenings = [Happening("kill_logbook", None, 30.0, 32.0), Happening("wipe_storage", "sim-02", 50.0, 55.0),
                  Happening("kill_agent", "sim-03", 80.0, 81.0)]
    made_at = {("sim-01", "a", 1): 5.0, ("sim-01", "a", 3): 35.0}  # seq 2's neighbour: made at 35 s
    result = check(MADE, [r for r in GOOD if r[2:3] != (2,) and r[1] != "b"], happenings=happenings,
                   made_at=made_at)
    assert result.problems() == [
        "lost: sim-01 seq 2 (incarnation a); during kill_logbook at 30.0 s",
        "lost: sim-02 seq 1 (incarnation b); during wipe_storage sim-02 at 50.0 s"]


# -- the generated lab --------------------------------------------------------------------


def test_fleet_population_is_seeded_and_mixed() -> None:
    import random

    first, again = pop.population(random.Random(5), 60), pop.population(random.Random(5), 60)
    assert first == again
    assert {t.kind for t in first} == {"regular", "staff", "suspended", "lapsed", "unknown"}
    assert len({t.badge for t in first}) == 60
    assert [m.id for m in pop.machines(3)] == ["sim-01", "sim-02", "sim-03"]
    assert pop.machines(100)[0].id == "sim-001"


# -- the capacity figure ----------------------------------------------------------------------


def test_fleet_capacity_quick_serves_some_agents() -> None:
    result = capacity(start=2, cap=3, window_s=2.0, per_worker=2)  # the third agent in a second worker
    assert result.agents >= 2
    assert set(result.p99_ms) <= {2, 3} and 2 in result.p99_ms
    assert all(math.isfinite(p) and p > 0 for p in result.p99_ms.values())
    assert result.as_dict()["fleet_agents_per_broker"] == result.agents


def test_fleet_refuses_more_machines_than_one_process_hosts() -> None:
    from agent.devtools.fleet.node import MAX_AGENTS

    result = CliRunner().invoke(main, ["fleet", "--machines", str(MAX_AGENTS + 1), "--duration", "2"])
    assert result.exit_code == 2
    assert f"at most {MAX_AGENTS}" in result.output


def test_fleet_pool_spreads_agents_over_workers_and_stops_them(tmp_path, mosquitto) -> None:
    """Past one process's limit the agents go to further workers; each one taps for real
    through the broker, a bad request fails only its own call, and close() ends every worker."""
    import time

    from agent.devtools.fleet.pool import MachinePool
    from agent.devtools.fleet.sim import publish_members, wait_for_list

    tappers = pop.population(random.Random(3), 12)
    version = int(time.time())
    publish_members(mosquitto.broker, "pool-test", tappers, version)
    pool = MachinePool(tmp_path, mosquitto.url, "pool-test", per_worker=2)
    try:
        machines = pool.start(pop.machines(3))
        workers = pool.processes
        assert len(workers) == 2 and workers[0].pid != workers[1].pid
        wait_for_list(machines, version)
        seqs = [machine.submit_tap(tappers[0].badge).result(15) for machine in machines]
        assert all(seq >= 1 for seq in seqs)  # every tap became an outbox event, whatever its outcome
        assert machines[2].status()["machine"] == "sim-03"
        with pytest.raises(RuntimeError, match="IndexError"):
            machines[0]._worker.request("tap", i=99, badge=tappers[0].badge).result(15)
        assert machines[1].submit_tap(tappers[1].badge).result(15) > seqs[1]
    finally:
        pool.close()
    assert [w.poll() for w in workers] == [0, 0]
