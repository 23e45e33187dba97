"""Help text is documentation: every command has it, and the README names every command."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from agent.cli import COMMANDS, main
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cli_help_every_command_has_help_and_is_in_the_readme(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    command = main.get_command(None, name)
    assert (command.help or "").strip(), f"fabpass {name} has no help text"
    assert f"fabpass {name}" in README, f"the README does not mention fabpass {name}"
