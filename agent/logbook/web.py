"""A read-only web page over the logbook: live fleet (with lock reasons), latest sessions and
refusals with members' names, out-of-order reports, machine-made changes pending in the
lab's list, and hours per week.

The standard library's threading HTTP server and an inline SVG chart: nothing
to install on the logbook host, and nothing that can write (each request reads
through a `query_only` connection). Optional HTTP Basic authentication with
one shared password; put it behind the lab's reverse proxy for TLS.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import logging
import signal
import sqlite3
import threading
import urllib.parse
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.core.model import EventType
from agent.core.timespec import parse_rfc3339, parse_time
from agent.logbook import grants, queries
from agent.logbook.chart import weekly_chart
from agent.logbook.names import names as member_names
from agent.logbook.retired import retired_machines

log = logging.getLogger(__name__)

LATEST = 100
WEEKS = 12
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
.idle{color:#2a7d2a}.in_use{color:#b36b00;font-weight:bold}.locked,.offline{color:#b00020}
form label{margin-right:1em}.error{color:#b00020;font-weight:bold}"""


def _read_only(db_path: Path) -> Database:
    conn = sqlite3.connect(str(db_path), timeout=10)
    conn.execute("PRAGMA query_only = ON")
    return Database(conn)


def _local(ts: str | None, tz: dt.tzinfo) -> str:
    return parse_rfc3339(ts).astimezone(tz).strftime("%Y-%m-%d %H:%M") if ts else ""


def _table(table_id: str, header: list[str], rows: list[list[Any]], row_class: str) -> str:
    """A table; each cell also carries its value as a class (`in_use`, `offline` get colours)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(f'<tr class="{row_class}">' + "".join(
        f'<td class="{escape(str(v))}">{escape(str(v))}</td>' if v is not None else "<td></td>"
        for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _who(member_id: str | None, names: dict[str, str]) -> str | None:
    """`Name (id)` when the member list names the member, else the id."""
    return f"{names[member_id]} ({member_id})" if member_id in names else member_id


def _fleet(db: Database, tz: dt.tzinfo, names: dict[str, str]) -> str:
    locks = queries.lock_reasons(db)
    retired = retired_machines(db)
    rows = []
    for s in db.query("SELECT * FROM status ORDER BY machine"):
        if s["machine"] in retired:
            continue
        status = json.loads(s["payload"])
        member_id = status.get("member_id")
        member = (f"{status['member_name']} ({member_id})" if status.get("member_name") and member_id
                  else _who(member_id, names))
        lock = locks.get(s["machine"])
        locked = status.get("locked") or s["state"] == "locked"
        reason = (f"{lock['reason'] or 'no reason given'} (by {names.get(lock['by'], lock['by'])})"
                  if locked and lock and lock["type"] == EventType.MACHINE_LOCKED else None)
        rows.append([s["machine"], s["state"], member, reason, _local(s["received_at"], tz)])
    return _table("fleet", ["Machine", "State", "Member", "Locked because", "Last heard"], rows, "machine")


def _pending(db: Database, tz: dt.tzinfo, names: dict[str, str]) -> str:
    rows = [[g["kind"], g["member_id"], names.get(g["member_id"]), g["value"], g["expires"],
             names.get(g["by"], g["by"]), g["machine"], _local(g["ts"], tz), g["event_id"][:8]]
            for g in grants.pending(db)]
    return _table("pending", ["Kind", "Member", "Name", "Value", "Expires", "By", "Machine", "When", "ID"],
                  rows, "grant")


def _form(db: Database, machine: str | None, member: str | None, reason: str | None, since: str) -> str:
    machines = [r["machine"] for r in db.query(
        "SELECT DISTINCT machine FROM sessions UNION SELECT machine FROM status ORDER BY machine")]
    options = "".join(f'<option{" selected" if m == machine else ""}>{escape(m)}</option>' for m in machines)
    return (f'<form method="get"><label>Machine <select name="machine"><option value="">all</option>'
            f'{options}</select></label>'
            f'<label>Member <input name="member" value="{escape(member or "")}" size="10"></label>'
            f'<label>Refusal reason <input name="reason" value="{escape(reason or "")}" size="14"></label>'
            f'<label>Since <input name="since" value="{escape(since)}" size="16"></label>'
            f'<button>Filter</button></form>')


def render_page(db: Database, params: dict[str, str], now: dt.datetime, tz: dt.tzinfo) -> tuple[int, str]:
    """(HTTP status, HTML) for the page with the filters in `params` (machine, member, reason, since)."""
    machine, member, reason = (params.get(k) or None for k in ("machine", "member", "reason"))
    since_text = params.get("since", "7d")
    error, since = "", None
    try:
        since = parse_time(since_text, now, tz) if since_text else None
    except ValueError as err:
        error = f"since: {err}"
    names = member_names(db)
    found = queries.sessions(db, now, machine=machine, member=member, since=since)[::-1][:LATEST]
    sessions = [[r["machine"], r["member_id"], names.get(r["member_id"]), r["badge"], _local(r["start"], tz),
                 _local(r["end"], tz) or "(open)", f"{r['duration_s'] / 3600:.2f}", r["end_reason"]]
                for r in found]
    refused = [[r["machine"], _local(r["ts"], tz), r["member_id"], names.get(r["member_id"]), r["badge"], r["reason"]]
               for r in queries.refusals(db, machine=machine, member=member, reason=reason,
                                         since=since, limit=LATEST)]
    reports = [[r["machine"], _local(r["ts"], tz), _who(r["by"], names)]
               for r in queries.out_of_order_reports(db, machine=machine, since=since, limit=LATEST)]
    body = "".join([
        "<h1>fabpass logbook</h1><h2>Fleet</h2>", _fleet(db, tz, names),
        "<h2>Sessions and refusals</h2>", _form(db, machine, member, reason, since_text),
        f'<p class="error">{escape(error)}</p>' if error else "",
        "<h3>Latest sessions</h3>",
        _table("sessions", ["Machine", "Member", "Name", "Badge", "Start", "End", "Hours", "Ended"],
               sessions, "session"),
        "<h3>Latest refusals</h3>",
        _table("refusals", ["Machine", "When", "Member", "Name", "Badge", "Reason"], refused, "refusal"),
        "<h3>Out-of-order reports</h3>",
        _table("out-of-order", ["Machine", "When", "Reported by"], reports, "report"),
        "<h2>Machine-made changes the lab's list does not hold yet</h2>",
        "<p>Badges enrolled and inductions given at the machines; <code>fabpass members sync --db</code> "
        "merges them until the lab's own list has them (<code>fabpass members pending --csv</code>), "
        "or the lab refuses one (<code>fabpass members dismiss ID</code>).</p>",
        _pending(db, tz, names),
        "<h2>Hours per machine per week</h2>",
        weekly_chart(queries.weekly_hours(db, now, tz, WEEKS, machine=machine)),
    ])
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fabpass logbook</title>'
            f'<meta http-equiv="refresh" content="60"><style>{STYLE}</style></head><body>{body}</body></html>')
    return (400 if error else 200), page


def make_server(db_path: Path, host: str, port: int, password: str | None,
                tz: dt.tzinfo) -> ThreadingHTTPServer:
    """The server, bound and ready; call serve_forever() (and shutdown() from another thread)."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "fabpass-logbook"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if password and not self._authorised():
                self._send(401, "<h1>Password required</h1>",
                           {"WWW-Authenticate": 'Basic realm="fabpass logbook", charset="UTF-8"'})
            elif url.path != "/":
                self._send(404, "<h1>Not found</h1>")
            else:
                params = dict(urllib.parse.parse_qsl(url.query))
                with _read_only(db_path) as db:
                    self._send(*render_page(db, params, dt.datetime.now(dt.timezone.utc), tz))

        def _authorised(self) -> bool:
            """Any user name, the one password (so a browser's saved login works)."""
            header = self.headers.get("Authorization", "")
            try:
                _, _, given = base64.b64decode(header.removeprefix("Basic "), validate=True).partition(b":")
            except ValueError:
                return False
            return hmac.compare_digest(given, password.encode())

        def _send(self, status: int, html: str, headers: dict[str, str] | None = None) -> None:
            body = html.encode()
            self.send_response(status)
            for name, value in {"Content-Type": "text/html; charset=utf-8",
                                "Content-Length": str(len(body)), "Cache-Control": "no-store",
                                **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return ThreadingHTTPServer((host, port), Handler)


def serve(db_path: Path, host: str, port: int, password: str | None, tz: dt.tzinfo) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = make_server(db_path, host, port, password, tz)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: threading.Thread(target=server.shutdown).start())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log.info("logbook web view on http://%s:%s/%s", host, server.server_port,
             "" if password else " (no password: keep it on loopback or behind a proxy)")
    with server:
        server.serve_forever()
