"""The reference pages made from the code, so that they cannot drift from it:
docs/reference/commands.md from every command's help, docs/reference/config.md
from the config's keys. `python -m agent.cli.reference` writes them; a test
checks that the files hold what it would write."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import click

from agent import config as cfg
from agent.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"
WIDTH = 88  # help is wrapped to this, whatever the terminal
_KINDS = {"duration": "a duration ('90s', '15m', '4h', '1h30m', '7d')", "pin": "a BCM pin (0-27)",
          "machine_id": "a machine id", "timezone": "a time zone name", "reader_type": "a reader type",
          "path": "a path", "hours": "a list of opening hours"}
_TYPES = {"str": "a string", "int": "an integer", "bool": "true or false", "float": "a number", "Path": "a path"}


def _helps(command: click.Command, ctx: click.Context) -> list[tuple[str, str]]:
    """(name, help text) of `command` and every command under it, as `--help` prints them."""
    found = [(ctx.command_path, command.get_help(ctx))] if ctx.parent is not None else []
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            found += _helps(sub, click.Context(sub, info_name=name, parent=ctx))
    return found


def commands_page() -> str:
    lines = ["# Command reference", "",
             "Made from each command's `--help` by `python -m agent.cli.reference`; "
             "a test fails when this page and the code disagree.", ""]
    root = click.Context(main, info_name="fabpass", terminal_width=WIDTH, max_content_width=WIDTH,
                         **main.context_settings)
    for name, text in _helps(main, root):
        lines += [f"## {name}", "", "```", text, "```", ""]
    return "\n".join(lines)


def _type(field: dataclasses.Field) -> str:
    kind = field.metadata["kind"]
    if kind:
        return _KINDS[kind]
    first = str(field.type).split("|")[0].strip()
    return _TYPES.get(first, first)


def _default(field: dataclasses.Field) -> str:
    if field.metadata["required"]:
        return "**required**"
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, str):
        return f'"{default}"'
    if isinstance(default, float) and field.metadata["kind"] == "duration":
        return f'"{default:g}s"'
    return str(default)


def config_page() -> str:
    lines = ["# Machine config reference", "",
             "One TOML file per machine (`/etc/fabpass/agent.toml` on a Pi; examples in `config/`). "
             "Unknown keys and wrong types are errors at start-up (exit 2). "
             "Made from the config's own key descriptions by `python -m agent.cli.reference`; "
             "a test fails when this page and the code disagree.", ""]
    for section, cls in cfg.SECTIONS.items():
        required = " (required section)" if section in cfg.REQUIRED_SECTIONS else ""
        lines += [f"## [{section}]{required}", "", typing.cast(str, cls.__doc__).strip(), "",
                  "| key | type | default | what it does |", "| --- | --- | --- | --- |"]
        for field in dataclasses.fields(cls):
            lines.append(f"| `{field.name}` | {_type(field)} | {_default(field)} | {field.metadata['doc']} |")
        lines.append("")
    return "\n".join(lines)


PAGES = {"commands.md": commands_page, "config.md": config_page}


def main_(argv: list[str] | None = None) -> int:
    DOCS.mkdir(parents=True, exist_ok=True)
    for name, page in PAGES.items():
        (DOCS / name).write_text(page())
        print(f"wrote {DOCS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main_(sys.argv[1:]))
