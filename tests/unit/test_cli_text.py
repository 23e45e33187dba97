"""What the command line shows a person: plain tables (as they were before tabulate),
the fleet with each machine's clock."""

from __future__ import annotations

import pytest

from agent.cli.text import clock_word, event_line, fleet_table, shown, table
from agent.logbook.queries import spreadsheet_cell


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


@pytest.mark.parametrize("data, text", [
    ("ada", "ada"),
    ("Zoë Ångström ✓", "Zoë Ångström ✓"),                  # printable Unicode stays as it is
    ("\x1b[2J", "\\x1b[2J"),                               # clear the screen
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),            # retitle the window
    ("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),                  # a forged second line
    ("\x9b31m", "\\x9b31m"),                               # C1 CSI
    ("\x7f", "\\x7f"),
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"),           # right-to-left override
    ("\u2066x\u2069", "\\u2066x\\u2069"),
    (None, "None"),
    (42, "42"),
])
def test_cli_text_shown_escapes_control_characters(data, text):
    assert shown(data) == text


def test_cli_text_table_and_event_line_escape_data():
    assert "\x1b" not in table(["A"], [["\x1b[31mred"]]) and "\\x1b[31mred" in table(["A"], [["\x1b[31mred"]])
    line = event_line({"type": "access_denied", "machine": "laser-1", "seq": 1, "ts": "2026-11-25T09:00:00Z",
                       "badge": "0BADC0DE", "member_id": "\x1b[2J", "reason": "unknown_badge\nforged line"})
    assert "\x1b" not in line and "\n" not in line and "\\x0aforged line" in line


@pytest.mark.parametrize("value, cell", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), ("m-1", "m-1"), ("", ""), (None, None), (-5.0, -5.0), (600.0, 600.0),
])
def test_cli_text_spreadsheet_cell_neutralises_formulas(value, cell):
    assert spreadsheet_cell(value) == cell
