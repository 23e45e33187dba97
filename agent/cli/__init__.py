"""The `fabpass` command line: a thin layer over the library modules.

Commands load lazily, so `fabpass tap` on a Pi Zero does not import the
logbook, the benchmarks or the web view.
"""

from __future__ import annotations

import importlib

import click

from agent import __version__

COMMANDS = {
    "run": "agent.cli.agent:run",
    "tap": "agent.cli.agent:tap",
    "input": "agent.cli.agent:input_",
    "status": "agent.cli.agent:status",
    "demo": "agent.cli.demo:demo",
    "members": "agent.cli.members:members",
    "logs": "agent.cli.technician:logs",
    "lock": "agent.cli.technician:lock",
    "unlock": "agent.cli.technician:unlock",
    "end-session": "agent.cli.technician:end_session",
    "logbook": "agent.cli.logbook:logbook",
    "fleet": "agent.cli.fleet:fleet",
    "bench": "agent.cli.bench:bench",
    "keys": "agent.cli.keys:keys",
    "doctor": "agent.cli.doctor:doctor",
    "cards": "agent.cli.cards:cards",  # secure cards
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fabpass")
def main() -> None:
    """fabpass: badge access control for Fab Lab machines.

    A Raspberry Pi beside each machine reads member badges, switches the
    machine's relay for inducted members, and logs every session and refusal
    over MQTT.
    """
