"""`fabpass run`, `fabpass tap`, `fabpass status`: the machine agent and its local controls."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agent.cli.options import (
    InputError,
    RuntimeFailure,
    broker_option,
    config_option,
    json_option,
    load_config,
    password_file_option,
    prefix_option,
    print_json,
)


@click.command()
@config_option
@click.option("--simulate", is_flag=True, help="Mock GPIO pins and a simulated reader; everything else real.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(config_path: Path, simulate: bool, verbose: bool) -> None:
    """Run the machine agent (a long-running daemon)."""
    from agent import logs
    from agent.daemon.agent import Agent, link_for
    from agent.daemon.lock import StorageInUse
    from agent.hardware.cardkeys import CardKeyError
    from agent.members.badgehash import BadgeKeyError

    config = load_config(config_path, simulate)
    logs.setup(config.machine.id, verbose)
    try:
        agent = Agent(config, link=link_for(config))
    except BadgeKeyError as err:
        raise InputError(f"{config_path}: members.badge_hash_key_file: {err}") from None
    except CardKeyError as err:
        raise InputError(f"{config_path}: reader.card_key_file: {err}") from None
    except StorageInUse as err:
        raise RuntimeFailure(f"{config_path}: storage.dir: {err}") from None
    agent.install_signal_handlers()
    sys.exit(agent.run())


def _ask(config_path: Path, payload: dict):
    from agent.daemon.control import ControlError, NotRunning, request

    config = load_config(config_path)
    try:
        return request(config.storage.dir, payload)
    except NotRunning:
        raise RuntimeFailure(f"no agent is running with {config_path} "
                             f"(start it with: fabpass run --config {config_path})") from None
    except ControlError as err:
        raise (InputError if err.usage else RuntimeFailure)(str(err)) from None


@click.command()
@click.argument("badge")
@config_option
@json_option
def tap(badge: str, config_path: Path, as_json: bool) -> None:
    """Tap BADGE on the simulated agent running with this config, and print the decision."""
    result = _ask(config_path, {"op": "tap", "badge": badge})
    if as_json:
        print_json(result)
        return
    from agent.cli.text import shown

    if result["granted"]:
        relay = "relay ON" if result["relay"] else "relay OFF"
        click.echo(shown(f"{result['action']}: {result['member_id']}, {relay}"))
    else:
        who = f" ({result['member_id']})" if result["member_id"] else ""
        click.echo(shown(f"refused{who}: {result['reason']}"))


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Ask the agent running with this config.")
@broker_option(required=False)
@password_file_option
@prefix_option
@json_option
def status(config_path: Path | None, broker_url: str | None, password_file: str | None,
           topic_prefix: str, as_json: bool) -> None:
    """The local agent's state (--config), or the whole fleet's (--broker)."""
    if (config_path is None) == (broker_url is None):
        raise InputError("give either --config FILE (this machine) or --broker URL (the fleet)")
    if broker_url is not None:
        from agent.cli.options import parse_broker
        from agent.cli.text import fleet_table
        from agent.link.broker import BrokerUnreachable
        from agent.link.fleetview import fleet_status

        try:
            machines = fleet_status(parse_broker(broker_url, password_file), topic_prefix)
        except BrokerUnreachable as err:
            raise RuntimeFailure(str(err)) from None
        print_json(machines) if as_json else click.echo(fleet_table(machines))
        return
    result = _ask(config_path, {"op": "status"})
    if as_json:
        print_json(result)
        return
    from agent.cli.text import clock_word, shown

    who = f" by {result['member_id']}" if result["member_id"] else ""
    lines = [
        f"{result['machine']}: {result['state']}{who} since {result['since']}",
        f"  relay      {'ON' if result['relay'] else 'off'}",
        f"  locked     {'yes' if result['locked'] else 'no'}",
        f"  members    version {result['members_version']} ({result['members_count']} members, "
        f"age {result['members_age_s']} s)",
        f"  outbox     {result['outbox']} waiting, last seq {result['last_seq']}",
        f"  broker     {'connected' if result['broker'] else 'not connected'}",
        f"  clock      {clock_word(result)}"
        + (" (dated rules refuse: clock_unsynchronised; see fabpass doctor)" if not result["clock_trusted"] else ""),
        "  logbook    " + ("no logbook has confirmed any event yet" if result["unarchived"] is None
                            else f"{result['unarchived']} events not yet confirmed (incarnation "
                                 f"{result['incarnation'] or '-'})"),
        f"  reader     {result['reader']['type']}, {'ok' if result['reader']['healthy'] else result['reader']['detail']}",
    ]
    if result["conflict"]:
        lines.append("  CONFLICT   another agent is running with this machine id: give each machine its own id")
    click.echo("\n".join(shown(line) for line in lines))
