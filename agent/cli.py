"""The `fabpass` command line: a thin layer over the library modules.

Commands load lazily, so `fabpass tap` on a Pi Zero does not import the
logbook, the benchmarks or the web view.
"""

from __future__ import annotations

import importlib

import click

from agent import __version__

COMMANDS = {
    "run": "agent.commands.agent:run",
    "tap": "agent.commands.agent:tap",
    "status": "agent.commands.agent:status",
    "demo": "agent.commands.demo:demo",
    "members": "agent.commands.members:members",
    "logs": "agent.commands.technician:logs",
    "lock": "agent.commands.technician:lock",
    "unlock": "agent.commands.technician:unlock",
    "end-session": "agent.commands.technician:end_session",
    "logbook": "agent.commands.logbook:logbook",
    "fleet": "agent.commands.fleet:fleet",
    "bench": "agent.commands.bench:bench",
    "keys": "agent.commands.keys:keys",
    "doctor": "agent.commands.doctor:doctor",
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
