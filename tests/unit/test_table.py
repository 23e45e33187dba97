"""Member lists as the lab's spreadsheets write them: CSV dialects, header case, extra
columns, the date formats of European and American locales, and XLSX workbooks."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.model import Member
from agent.members.snapshot import SnapshotError, load_csv, load_file
from agent.members.table import DateOrder, TableError, read_csv, read_xlsx

ADA = Member(id="m-0001", name="Ada Lovelace", status="active", expires=dt.date(2027, 6, 30),
             roles=frozenset({"staff"}), inductions={"laser": None, "cnc": dt.date(2027, 1, 31)},
             badges=("04A1B2C3D4E5F6",))
GRACE = Member(id="m-0002", name="Grace Hopper", status="suspended", badges=("DEADBEEF",))


def members(text: str, **kwargs) -> list[Member]:
    return list(load_csv(text, version=1, source="list.csv", **kwargs).members())


# --- what the issue reproduced, one at a time, through the file loader that publish uses ----------

EXCEL_EUROPE = ("\ufeffID;Name;Badges;Status;Expires;Roles;Inductions;Email\r\n"
                "m-0001;Ada Lovelace;04A1B2C3D4E5F6;Active;30/06/2027;staff;laser cnc:31/01/2027;ada@example.org\r\n"
                "m-0002;Grace Hopper;DEADBEEF;Suspended;;;;grace@example.org\r\n")


@pytest.mark.parametrize("text", [
    EXCEL_EUROPE,                                                             # all of it at once
    EXCEL_EUROPE.replace(";", ","),                                           # ',' separators
    EXCEL_EUROPE.replace(";", "\t"),                                          # tabs (Excel's "Unicode text")
    EXCEL_EUROPE.replace("\ufeff", ""),                                       # no BOM
    EXCEL_EUROPE.replace("30/06/2027", "30.06.2027").replace("31/01/2027", "31.01.2027"),  # German dates
    EXCEL_EUROPE.replace("30/06/2027", "2027-06-30").replace("31/01/2027", "2027-01-31"),  # ISO dates
], ids=["semicolons", "commas", "tabs", "no-bom", "dotted-dates", "iso-dates"])
def test_table_spreadsheet_csv_is_read_as_the_lab_wrote_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "members.csv"
    path.write_text(text, encoding="utf-8")
    snapshot = load_file(path, version=5)
    assert list(snapshot.members()) == [ADA, GRACE]
    assert snapshot.warnings == (f"{path}: column 'email' is not a member field; ignored",)


def test_table_utf16_csv_from_excel_unicode_text(tmp_path: Path) -> None:
    path = tmp_path / "members.csv"
    path.write_bytes(EXCEL_EUROPE.replace(";", "\t").replace("\ufeff", "").encode("utf-16"))
    assert list(load_file(path, version=5).members()) == [ADA, GRACE]


# --- day and month ------------------------------------------------------------------------------

def test_table_american_dates_are_settled_by_a_day_over_12() -> None:
    text = "id,status,badges,expires\nm-1,active,DEADBEEF,06/30/2027\nm-2,active,CAFEBABE,01/02/2027\n"
    first, second = members(text)
    assert (first.expires, second.expires) == (dt.date(2027, 6, 30), dt.date(2027, 1, 2))


def test_table_european_dates_are_settled_by_a_day_over_12() -> None:
    text = "id,status,badges,expires\nm-1,active,DEADBEEF,01/02/2027\nm-2,active,CAFEBABE,30/06/2027\n"
    first, second = members(text)
    assert (first.expires, second.expires) == (dt.date(2027, 2, 1), dt.date(2027, 6, 30))


def test_table_dates_that_cannot_be_settled_are_refused_unless_the_order_is_given() -> None:
    text = "id,status,badges,expires\nm-1,active,DEADBEEF,01/02/2027\n"
    with pytest.raises(SnapshotError, match=r"list.csv row 2 \(id 'm-1'\): expires: '01/02/2027' could be "
                                            r"day/month or month/day.*--date-order"):
        members(text)
    (member,) = members(text, date_order=DateOrder.MDY)
    assert member.expires == dt.date(2027, 1, 2)
    (member,) = members(text, date_order=DateOrder.DMY)
    assert member.expires == dt.date(2027, 2, 1)


def test_table_a_file_with_both_orders_is_refused_naming_both_rows() -> None:
    text = "id,status,badges,expires\nm-1,active,DEADBEEF,30/06/2027\nm-2,active,CAFEBABE,06/30/2027\n"
    with pytest.raises(SnapshotError, match=r"list.csv: dates in both orders: row 2 .*30/06/2027.* and row 3 "
                                            r".*06/30/2027"):
        members(text)


def test_table_a_given_order_the_file_contradicts_is_refused() -> None:
    text = "id,status,badges,expires\nm-1,active,DEADBEEF,30/06/2027\n"
    with pytest.raises(SnapshotError, match=r"row 2 \(id 'm-1'\): expires: '30/06/2027' is not a month/day/year"):
        members(text, date_order=DateOrder.MDY)


@pytest.mark.parametrize("cell, message", [
    ("31/02/2027", "is not a real date"),
    ("30/06/27", "write the year in full"),
    ("next year", "is not a date"),
])
def test_table_bad_dates_name_the_row(cell: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=rf"row 2 \(id 'm-1'\): expires: '{cell}'.* {message}"):
        members(f"id,status,badges,expires\nm-1,active,DEADBEEF,{cell}\n")


# --- bad files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", r"list.csv: empty: no header row"),
    ("id,status,badges\n", r"list.csv: no members \(only a header\)"),
    ("name,email\nAda,ada@example.org\n", r"list.csv row 1: no 'id' column.*found name, email"),
    ("id,status,badges\nm-1,active,DEADBEEF\nm-2,act", r"list.csv row 3: 2 cells; the header has 3 \(a truncated file\?\)"),
    ('id,status,badges\nm-1,active,"DEADBEEF\n', r"list.csv row 2: not valid CSV"),
    ("<!doctype html><html><body>Sign in</body></html>\n", r"list.csv: an HTML page, not a member list"),
    ("id,status,badges\nm-1,Banned,DEADBEEF\n", r"row 2 \(id 'm-1'\): status: 'banned' is not one of active, suspended"),
])
def test_table_bad_csv_is_refused_naming_the_row(text: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        members(text)


def test_table_read_csv_keeps_cells_as_text_and_warns_once_per_unknown_column() -> None:
    table = read_csv("ID,Phone,STATUS,Badges,phone \nm-1,0123,active,DEADBEEF,x\n".encode(), "list.csv")
    assert table.rows == [("list.csv row 2", {"id": "m-1", "status": "active", "badges": "DEADBEEF"})]
    assert table.warnings == ["list.csv: column 'phone' is not a member field; ignored"]


# --- XLSX ---------------------------------------------------------------------------------------

def workbook(*rows: tuple) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Members"
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_table_xlsx_with_real_dates_numbers_and_an_extra_column(tmp_path: Path) -> None:
    path = tmp_path / "members.xlsx"
    path.write_bytes(workbook(
        ("ID", "Name", "Badges", "Status", "Expires", "Roles", "Inductions", "Notes"),
        ("m-0001", "Ada Lovelace", "04A1B2C3D4E5F6", "Active", dt.datetime(2027, 6, 30), "staff",
         "laser cnc:31/01/2027", "likes lasers"),
        (None, None, None, None, None, None, None, None),
        ("m-0002", "Grace Hopper", 12345678, "suspended", None, None, None, None),
    ))
    snapshot = load_file(path, version=3)
    ada, grace = snapshot.members()
    assert ada == ADA
    assert grace == GRACE._replace(badges=("12345678",))
    assert snapshot.warnings == (f"{path}: column 'notes' is not a member field; ignored",)


def test_table_xlsx_rows_are_named_as_the_spreadsheet_numbers_them() -> None:
    data = workbook(("id", "status", "badges"), ("m-1", "active", "DEADBEEF"), ("m-2", "gone", "CAFEBABE"))
    assert [place for place, _ in read_xlsx(data, "list.xlsx").rows] == ["list.xlsx row 2", "list.xlsx row 3"]


@pytest.mark.parametrize("data, message", [
    (b"id,status\n", "list.xlsx: not an XLSX workbook"),
    (b"PK\x03\x04 truncated", "list.xlsx: not an XLSX workbook"),
])
def test_table_xlsx_that_is_not_one_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(TableError, match=message):
        read_xlsx(data, "list.xlsx")


def test_table_xlsx_without_openpyxl_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab extra is for the broker host: an agent without it refuses a workbook by name."""
    import builtins

    real_import = builtins.__import__

    def no_openpyxl(name, *args, **kwargs):
        if name.startswith("openpyxl"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openpyxl)
    with pytest.raises(TableError, match=r"list.xlsx: reading XLSX needs openpyxl \(pip install 'fabpass\[lab\]'\)"):
        read_xlsx(b"PK\x03\x04", "list.xlsx")


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("id,;\t\"\n\r:/.-0123456789abcdefABCDEF \ufeff\x00é")), max_size=200))
def test_table_any_text_is_a_list_or_a_snapshot_error(text: str) -> None:
    for whole in ("id,status,badges,expires,inductions\n" + text, text):
        try:
            loaded = list(load_csv(whole, version=1, source="list.csv").members())
        except SnapshotError as err:
            assert "list.csv" in str(err), f"the error does not name the file: {err}"
        else:
            assert all(isinstance(m, Member) and m.id and m.status in ("active", "suspended") for m in loaded)
