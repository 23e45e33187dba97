"""Member lists as spreadsheets write them: CSV in any of the dialects Excel and
LibreOffice save, and XLSX workbooks, turned into member objects for the snapshot.

- Encoding: UTF-8 with or without a BOM, or UTF-16 with its BOM (Excel's
  "Unicode text"). Anything else is refused: a guessed code page would garble names.
- Separator: `,`, `;` or tab, found by `csv.Sniffer` and confirmed by the
  header, which must then hold an `id` column; headers match in any case.
  Columns that are not member fields are ignored, with one warning each.
- Dates: `2027-06-30`, `2027/06/30`, `30.06.2027` (always day first) and
  `30/06/2027` or `06/30/2027`. Whether slashes (or dashes) put the day or
  the month first is settled by the file itself: a first number over 12 is a
  day, a second number over 12 a day. A file with both is refused; a file
  whose slashed dates could all be either (01/02/2027) is refused unless the
  order is given (`DateOrder`). Nothing is guessed silently.
- XLSX (openpyxl, imported only for a workbook): the first sheet, the first
  non-empty row its header; real date cells need no settling.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

COLUMNS = ("id", "name", "badges", "status", "expires", "roles", "inductions")
REQUIRED = ("id", "status", "badges")
SEPARATORS = ",;\t"
_ISO = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})")
_DOTTED = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{2,4})")
_SLASHED = re.compile(r"(\d{1,2})[/-](\d{1,2})[/-](\d{2,4})")
_LIST_ITEMS = re.compile(r"[\s,;]+")


class TableError(ValueError):
    """A file that is not a member table; the message names the file and the row."""


class DateOrder(str, Enum):
    DMY = "dmy"
    MDY = "mdy"

    @property
    def text(self) -> str:
        return "day/month/year" if self is DateOrder.DMY else "month/day/year"


@dataclass
class Table:
    """Data rows as (place, {member field: cell}), where place is `SOURCE row N`."""

    source: str
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- reading --------------------------------------------------------------------------------

def _decode(data: bytes, source: str) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as err:
            raise TableError(f"{source}: not valid UTF-16 (byte {err.start})") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise TableError(f"{source}: not UTF-8 (byte {err.start}); save the CSV as UTF-8") from None


def _header(cells: Iterable[Any]) -> list[str]:
    return [str(cell).strip().removeprefix("\ufeff").strip().casefold() if cell is not None else ""
            for cell in cells]


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """The sniffed dialect when its header holds an `id` column; else the separator that
    gives one (a file of one column, which the sniffer cannot split, is read as commas)."""
    first = text.split("\n", 1)[0]
    try:
        sniffed = csv.Sniffer().sniff(text[:65536], delimiters=SEPARATORS)
        if "id" in _header(next(csv.reader([first], sniffed), [])):
            return sniffed
    except csv.Error:
        pass
    for separator in SEPARATORS:
        if "id" in _header(first.split(separator)):
            class Found(csv.excel):
                delimiter = separator
            return Found
    return csv.excel


def _looks_like_html(text: str) -> bool:
    return text.lstrip()[:15].lower().startswith(("<!doctype html", "<html", "<?xml", "<head", "<body"))


def _columns(header: list[str], table: Table) -> list[str | None]:
    """Each header cell's member field, or None for a column to ignore (warned once)."""
    found = [name for name in header if name]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise TableError(f"{table.source} row 1: no {missing[0]!r} column (a member table has "
                         f"{', '.join(COLUMNS)}, in any order and case); found {', '.join(found) or 'nothing'}")
    columns: list[str | None] = []
    for name in header:
        if name in COLUMNS and name not in columns:
            columns.append(name)
            continue
        if name in COLUMNS:
            raise TableError(f"{table.source} row 1: column {name!r} appears twice")
        columns.append(None)
        warning = f"{table.source}: column {name!r} is not a member field; ignored"
        if name and warning not in table.warnings:
            table.warnings.append(warning)
    return columns


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def read_csv(data: bytes | str, source: str) -> Table:
    """A CSV member table; TableError names the file and the row."""
    text = _decode(data, source) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    table = Table(source)
    if not text.strip():
        raise TableError(f"{source}: empty: no header row")
    if _looks_like_html(text):
        raise TableError(f"{source}: an HTML page, not a member list (a login or error page?)")
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text), strict=True)
    number = 0
    try:
        columns = _columns(_header(next(reader)), table)
        number = 1
        for number, cells in enumerate(reader, start=2):
            if all(_blank(cell) for cell in cells):
                continue
            if len(cells) < len(columns) or any(not _blank(c) for c in cells[len(columns):]):
                raise TableError(f"{source} row {number}: {len(cells)} cells; the header has {len(columns)}"
                                 + (" (a truncated file?)" if len(cells) < len(columns) else ""))
            table.rows.append((f"{source} row {number}",
                               {name: cell for name, cell in zip(columns, cells) if name}))
    except csv.Error as err:
        raise TableError(f"{source} row {number + 1}: not valid CSV: {err}") from None
    return table


def read_xlsx(data: bytes, source: str) -> Table:
    """The first sheet of an XLSX workbook as a member table."""
    import zipfile

    try:
        from openpyxl import load_workbook
    except ImportError:  # the lab extra is for the broker host; a Pi may not have it
        raise TableError(f"{source}: reading XLSX needs openpyxl (pip install 'fabpass[lab]'); "
                         "or save the sheet as CSV") from None

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise TableError(f"{source}: not an XLSX workbook ({err})") from None
    table = Table(source)
    try:
        sheet = book.worksheets[0]
        columns: list[str | None] | None = None
        for number, cells in enumerate(sheet.iter_rows(values_only=True), start=1):
            if all(_blank(cell) for cell in cells):
                continue
            if columns is None:
                columns = _columns(_header(cells), table)
                continue
            table.rows.append((f"{source} row {number}",
                               {name: cell for name, cell in zip(columns, cells) if name}))
    finally:
        book.close()
    if columns is None:
        raise TableError(f"{source}: empty: no header row")
    return table


# --- cells to member fields -----------------------------------------------------------------

def _text(cell: Any) -> str:
    """A cell as text: a whole number stored as a number (an id, a decimal badge) without '.0'."""
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()


@dataclass
class _Dates:
    """The date cells of a table, read once the day/month order is settled."""

    order: DateOrder | None
    given: bool
    evidence: dict[DateOrder, str] = field(default_factory=dict)

    def observe(self, place: str, text: str) -> None:
        match = _SLASHED.fullmatch(text)
        if match and len(match.group(3)) == 4:
            first, second = int(match.group(1)), int(match.group(2))
            if first > 12 >= second:
                self.evidence.setdefault(DateOrder.DMY, f"{place.rsplit(' row ', 1)[-1]} ({text})")
            elif second > 12 >= first:
                self.evidence.setdefault(DateOrder.MDY, f"{place.rsplit(' row ', 1)[-1]} ({text})")

    def settle(self, source: str) -> None:
        if len(self.evidence) == 2:
            raise TableError(f"{source}: dates in both orders: row {self.evidence[DateOrder.DMY]} puts the day "
                             f"first and row {self.evidence[DateOrder.MDY]} the month; make them agree")
        if self.order is None and self.evidence:
            (self.order,) = self.evidence

    def parse(self, cell: Any, what: str) -> str | None:
        """ISO text for the snapshot's own check, or ValueError naming the cell."""
        if isinstance(cell, dt.datetime):
            return cell.date().isoformat()
        if isinstance(cell, dt.date):
            return cell.isoformat()
        text = _text(cell)
        if not text:
            return None
        if match := _ISO.fullmatch(text):
            return self._date(text, what, int(match.group(1)), int(match.group(2)), int(match.group(3)))
        if match := _DOTTED.fullmatch(text):
            return self._date(text, what, int(match.group(3)), int(match.group(2)), int(match.group(1)),
                              match.group(3))
        if match := _SLASHED.fullmatch(text):
            first, second = int(match.group(1)), int(match.group(2))
            if len(match.group(3)) != 4:
                raise ValueError(f"{what}: {text!r} has a two-digit year; write the year in full")
            if min(first, second) > 12:
                raise ValueError(f"{what}: {text!r} is not a real date")
            if self.order is None:
                raise ValueError(f"{what}: {text!r} could be day/month or month/day, and no date in the "
                                 "file settles it; write YYYY-MM-DD or give --date-order dmy|mdy")
            day, month = (first, second) if self.order is DateOrder.DMY else (second, first)
            if month > 12 and self.given:
                raise ValueError(f"{what}: {text!r} is not a {self.order.text} date (--date-order)")
            return self._date(text, what, int(match.group(3)), month, day, match.group(3))
        return text  # the snapshot names it: "'next year' is not a date"

    @staticmethod
    def _date(text: str, what: str, year: int, month: int, day: int, year_text: str = "yyyy") -> str:
        if len(year_text) != 4:
            raise ValueError(f"{what}: {text!r} has a two-digit year; write the year in full")
        try:
            return dt.date(year, month, day).isoformat()
        except ValueError:
            raise ValueError(f"{what}: {text!r} is not a real date") from None


def _items(cell: Any, separators: re.Pattern[str] = _LIST_ITEMS) -> list[str]:
    return [item for item in separators.split(_text(cell)) if item]


_TEN_DIGITS = re.compile(r"[0-9]{10}")


def _badges(cell: Any) -> list[str]:
    """A row's badges, separated by spaces. Exactly 10 decimal digits without a prefix are
    refused: a spreadsheet often holds the number printed on an EM4100 card, and the
    same digits read as hex are another tag (ValueError naming both readings)."""
    badges = _items(cell, re.compile(r"\s+"))
    for badge in badges:
        if not _TEN_DIGITS.fullmatch(badge):
            continue
        value = int(badge)
        if value > 0xFFFFFFFF:
            raise ValueError(f"badges: {badge} looks like the number printed on an EM4100 card, but that is at "
                             f"most 4294967295; if it is the 5-byte UID in hex, write hex:{badge}")
        raise ValueError(f"badges: {badge} can be read two ways: as hex, the 5-byte UID {badge} (write "
                         f"hex:{badge}), or as the number printed on an EM4100 card, the tag's low 32 bits "
                         f"0x{value:08X} (write em:{badge})")
    return badges


def member_objects(table: Table, date_order: DateOrder | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(place, member in its JSON shape) for each row: the snapshot validates them.

    Badges are separated by spaces (an `em:FFF,CCCCC` badge holds a comma);
    roles and inductions by spaces, commas or semicolons; an induction is
    `name` or `name:DATE`. ValueError names the row.
    """
    dates = _Dates(date_order, date_order is not None)
    for place, row in table.rows:
        for text in [_text(row.get("expires"))] + [i.partition(":")[2] for i in _items(row.get("inductions"))]:
            dates.observe(place, text)
    dates.settle(table.source)
    result = []
    for place, row in table.rows:
        where = f"{place} (id {_text(row.get('id'))!r})"
        try:
            inductions: dict[str, str | None] = {}
            for item in _items(row.get("inductions")):
                name, _, expiry = item.partition(":")
                if not name:
                    raise ValueError(f"inductions: {item!r} has no name (write name or name:YYYY-MM-DD)")
                if name in inductions:
                    raise ValueError(f"inductions: {name!r} is listed twice")
                inductions[name] = dates.parse(expiry, f"inductions.{name}")
            result.append((place, {
                "id": _text(row.get("id")), "name": _text(row.get("name")),
                "status": _text(row.get("status")).casefold(),
                "badges": _badges(row.get("badges")),
                "expires": dates.parse(row.get("expires"), "expires"),
                "roles": _items(row.get("roles")), "inductions": inductions,
            }))
        except ValueError as err:
            raise TableError(f"{where}: {err}") from None
    if not result:
        raise TableError(f"{table.source}: no members (only a header)")
    return result
