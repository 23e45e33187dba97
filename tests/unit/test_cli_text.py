"""What the command line shows a person: plain tables (as they were before tabulate),
the fleet with each machine's clock."""

from __future__ import annotations

import pytest

from agent.cli.text import clock_word, fleet_table, table


def test_cli_text_table_is_plain_columns_two_spaces_apart() -> None:
    assert table(["A", "B"], [["x", "y"], ["long one", None]]) == "A         B\nx         y\nlong one"


def test_cli_text_table_keeps_cells_as_they_are_and_right_aligns_on_request() -> None:
    assert table(["N", "V"], [["a  b", "1"], ["c", "22"]], align=["left", "right"]) == (
        "N      V\na  b   1\nc     22")


def test_cli_text_fleet_table_says_when_no_machine_reported() -> None:
    assert fleet_table([]) == "no machine has reported yet"
    text = fleet_table([{"machine": "laser-1", "state": "offline"}])
    assert text.splitlines()[1].split() == ["laser-1", "offline", "-", "-", "-", "-", "-", "NO"]


@pytest.mark.parametrize("status, word", [
    ({"clock_synchronised": True, "clock_trusted": True}, "ok"),
    ({"clock_synchronised": False, "clock_trusted": True}, "trusted"),
    ({"clock_synchronised": False, "clock_trusted": False}, "NOT SYNCED"),
    ({"state": "offline"}, "-"),
])
def test_cli_text_clock_word(status, word):
    assert clock_word(status) == word


def test_cli_text_fleet_table_shows_each_machines_clock():
    lines = fleet_table([
        {"machine": "laser-1", "state": "idle", "clock_synchronised": True, "clock_trusted": True},
        {"machine": "cnc-1", "state": "idle", "clock_synchronised": False, "clock_trusted": False},
    ]).splitlines()
    assert "CLOCK" in lines[0].split()
    assert " ok " in lines[1] and "NOT SYNCED" in lines[2]
