"""`fabpass fleet`: a simulated fleet with a consistency check."""

from __future__ import annotations

import logging
import sys

import click

from agent.cli.options import (
    InputError,
    RuntimeFailure,
    json_option,
    password_file_option,
    print_json,
)

CHAOS_MACHINES = 20


def _summary(r: dict) -> list[str]:
    reasons = ", ".join(f"{k} {v}" for k, v in r["refused_by_reason"].items()) or "none"
    ends = ", ".join(f"{k} {v}" for k, v in r["sessions_by_end"].items()) or "none"
    lines = [
        f"fleet: {r['machines']} machines, {r['members']} members + {r['badges'] - r['members']} unknown badges, "
        f"{r['duration_s']:g} s, seed {r['seed']}, broker {r['broker']}, outages {r['outages']}"
        + (f", chaos ({len(r['chaos'])} scenarios)" if r["chaos"] else ""),
        f"taps: {r['taps']}; granted {r['granted']} ({', '.join(f'{k} {v}' for k, v in r['actions'].items() if k != 'refused')}); "
        f"refused {r['refused']} ({reasons})",
        f"events: made {r['events_sent']} by {r['incarnations']} incarnations, archived {r['events_archived']}, "
        f"lost {r['lost']}, duplicated {r['duplicated']}, conflicting {r['conflicting']}, "
        f"unexpected {r['unexpected']}, delivered again on the wire (kept once) {r['redelivered']}",
        f"sessions: {r['sessions']} ({ends}), open {r['sessions_open']}; relay faults {r['relay_faults']}",
        *(f"chaos: {h['scenario']}{' ' + h['machine'] if h['machine'] else ''} at {h['start_s']:g} s"
          f"{': ' + h['detail'] if h['detail'] else ''}{' FAILED: ' + h['failure'] if h['failure'] else ''}"
          for h in r["chaos"]),
        f"elapsed {r['elapsed_s']:g} s",
    ]
    lines += [f"  problem: {p}" for p in r["problems"]]
    lines.append("consistent" if r["consistent"] else "INCONSISTENT")
    return lines


@click.command()
@click.option("--machines", type=click.IntRange(1), required=True, help="How many simulated agents.")
@click.option("--duration", type=click.FloatRange(1, 86400), required=True, metavar="SECONDS",
              help="How long members tap.")
@click.option("--broker", "broker_url", metavar="URL",
              help="Use this broker (mqtt://…) instead of starting a local mosquitto.")
@password_file_option
@click.option("--prefix", "topic_prefix", default="fabpass-fleet", show_default=True,
              help="The MQTT topic prefix of the simulated lab (keep it apart from a real lab's).")
@click.option("--outages", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Stop and restart the (local) broker this many times during the run.")
@click.option("--chaos", is_flag=True,
              help="Agents and logbook as processes, and on a seeded schedule: kill -9 of agents and of the "
                   "logbook, a broker restart without persistence, a wiped storage, a logbook started late, "
                   "two agents sharing an id (local broker only).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of who taps where and when.")
@click.option("-v", "--verbose", is_flag=True, help="Log the agents' and the logbook's messages.")
@json_option
def fleet(machines: int, duration: float, broker_url: str | None, password_file: str | None, topic_prefix: str,
          outages: int, chaos: bool, seed: int, verbose: bool, as_json: bool) -> None:
    """Simulate a fleet and check that the logbook got exactly what the agents made.

    MACHINES real agents (simulated pins and readers, real SQLite and MQTT),
    a generated member list published as the retained snapshot, members
    tapping at random, the real logbook collector; then every agent stops and
    the check runs: every event of every incarnation archived once (none lost,
    none doubled, no seq under two event_ids), no session open, no relay on
    without a session, and with --chaos every scenario done as it should. A
    problem names the scenarios under way when its event was made. Exit 0 only
    when consistent, 1 otherwise.
    """
    from agent.devtools.fleet import FleetOptions, run_fleet
    from agent.devtools.fleet.node import MAX_AGENTS
    from agent.devtools.localbroker import BrokerNotInstalled
    from agent.link.broker import BadBrokerURL, Broker

    if machines > MAX_AGENTS:
        raise InputError(f"--machines: at most {MAX_AGENTS} (the agents share one process, and its MQTT "
                         "client cannot wait on more sockets than that)")
    if chaos and machines > CHAOS_MACHINES:
        raise InputError(f"--machines: at most {CHAOS_MACHINES} with --chaos (each agent is a process of its own)")
    if broker_url is not None:
        try:
            Broker.parse(broker_url)
        except BadBrokerURL as err:
            raise InputError(f"--broker: {err}") from None
        if outages:
            raise InputError("--outages: only with the local broker fleet starts itself (no --broker)")
        if chaos:
            raise InputError("--chaos: only with the local broker fleet starts itself (it restarts it)")
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                        format="%(asctime)s %(name)s %(message)s")
    say = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    options = FleetOptions(machines=machines, duration=duration, broker_url=broker_url, password_file=password_file,
                           prefix=topic_prefix, outages=outages, seed=seed, chaos=chaos)
    try:
        report = run_fleet(options, say)
    except BrokerNotInstalled as err:
        raise RuntimeFailure(str(err)) from None
    except (OSError, RuntimeError, TimeoutError) as err:
        raise RuntimeFailure(f"the simulation failed: {err}") from None
    if as_json:
        print_json(report)
    else:
        for line in _summary(report):
            click.echo(line)
    sys.exit(0 if report["consistent"] else 1)
