"""What the command line shows a person: plain tables, as they were before tabulate."""

from __future__ import annotations

from agent.cli.text import fleet_table, table


def test_cli_text_table_is_plain_columns_two_spaces_apart() -> None:
    assert table(["A", "B"], [["x", "y"], ["long one", None]]) == "A         B\nx         y\nlong one"


def test_cli_text_table_keeps_cells_as_they_are_and_right_aligns_on_request() -> None:
    assert table(["N", "V"], [["a  b", "1"], ["c", "22"]], align=["left", "right"]) == (
        "N      V\na  b   1\nc     22")


def test_cli_text_fleet_table_says_when_no_machine_reported() -> None:
    assert fleet_table([]) == "no machine has reported yet"
    text = fleet_table([{"machine": "laser-1", "state": "offline"}])
    assert text.splitlines()[1].split() == ["laser-1", "offline", "-", "-", "-", "-", "NO"]
