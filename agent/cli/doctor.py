"""`fabpass doctor --config FILE [--json]`: check a Pi before (or while) it runs its machine."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.options import config_option, json_option, load_config, print_json


@click.command()
@config_option
@json_option
def doctor(config_path: Path, as_json: bool) -> None:
    """Check this Pi for its machine: SPI, the reader, the relay pin, the service
    user's groups, the clock and the broker. One line per check:
    `ok|warn|fail  CHECK: DETAIL — FIX`. Exit 0 when nothing fails, 1 otherwise.

    Run it as the service user to see what the agent sees:
    sudo -u fabpass /opt/fabpass/bin/fabpass doctor --config /etc/fabpass/agent.toml
    """
    from agent.daemon.doctor import FAIL, diagnose

    results = diagnose(load_config(config_path))
    failed = any(result.status == FAIL for result in results)
    if as_json:
        print_json({"ok": not failed, "checks": [result.to_json() for result in results]})
    else:
        for result in results:
            click.echo(result.line())
    raise SystemExit(1 if failed else 0)
