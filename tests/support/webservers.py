"""Local HTTP servers on loopback for the lab-side tests: a spreadsheet host with ETags,
a fake of Fabman's documented API, and an endpoint that records notifications.
Each runs in a thread and is shut down by the `serve` context manager."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], state: Any) -> Iterator[str]:
    """Serve `handler` (which finds `state` as self.server.state) on a free loopback port;
    yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


# --- a spreadsheet on a web server --------------------------------------------------------------

@dataclass
class Sheet:
    """What the server answers: `body` with `etag`, or `status` (an error page)."""

    body: bytes = b""
    content_type: str = "text/csv; charset=utf-8"
    etag: str = '"v1"'
    last_modified: str = "Wed, 02 Dec 2026 09:00:00 GMT"
    status: int = 200
    requests: list[dict[str, str]] = field(default_factory=list)
    not_modified: int = 0


class SheetHandler(_Quiet):
    def do_GET(self) -> None:
        sheet: Sheet = self.server.state  # type: ignore[attr-defined]
        sheet.requests.append(dict(self.headers))
        if sheet.status != 200:
            self.reply(sheet.status, b"<html><body>Internal error</body></html>", {"Content-Type": "text/html"})
        elif sheet.etag and self.headers.get("If-None-Match") == sheet.etag:
            sheet.not_modified += 1
            self.reply(304, headers={"ETag": sheet.etag})
        else:
            validators = {"ETag": sheet.etag, "Last-Modified": sheet.last_modified}
            self.reply(200, sheet.body, {"Content-Type": sheet.content_type,
                                         **{k: v for k, v in validators.items() if v}})


# --- Fabman's API, as documented: Link pagination, X-Total-Count, 429 ---------------------------

@dataclass
class Fabman:
    members: list[dict[str, Any]]
    courses: list[dict[str, Any]]
    token: str = "test-api-key"
    page_size: int = 2
    too_many: int = 0  # answer this many requests with 429 first
    lie_about_total: int = 0  # add this to X-Total-Count (a listing cut short)
    requests: list[str] = field(default_factory=list)


class FabmanHandler(_Quiet):
    def do_GET(self) -> None:
        fabman: Fabman = self.server.state  # type: ignore[attr-defined]
        fabman.requests.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {fabman.token}":
            self.reply(401, b'{"error": "unauthorized"}', {"Content-Type": "application/json"})
            return
        if fabman.too_many:
            fabman.too_many -= 1
            self.reply(429, b"Too Many Requests", {"Retry-After": "0"})
            return
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        records = {"/api/v1/members": fabman.members, "/api/v1/training-courses": fabman.courses}.get(url.path)
        if records is None:
            self.reply(404)
            return
        if url.path == "/api/v1/members" and sorted(query.get("embed", [])) != ["key", "trainings"]:
            records = [{k: v for k, v in r.items() if k != "_embedded"} for r in records]
        offset = int(query.get("offset", ["0"])[0])
        size = min(int(query.get("limit", ["50"])[0]), fabman.page_size)
        page = records[offset:offset + size]
        headers = {"Content-Type": "application/json",
                   "X-Total-Count": str(len(records) + fabman.lie_about_total)}
        if offset + size < len(records):
            rest = {k: v for k, v in query.items() if k != "offset"}
            next_query = urllib.parse.urlencode({**rest, "offset": offset + size}, doseq=True)
            headers["Link"] = f'<http://{self.headers["Host"]}{url.path}?{next_query}>; rel="next"'
        self.reply(200, json.dumps(page).encode(), headers)


# --- a JSON webhook (Apprise's json://) ----------------------------------------------------------

@dataclass
class Inbox:
    messages: list[dict[str, Any]] = field(default_factory=list)
    hang: threading.Event | None = None  # requests wait until it is set (a channel that hangs)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def titles(self) -> list[str]:
        with self.lock:
            return [m.get("title", "") for m in self.messages]


class InboxHandler(_Quiet):
    def do_POST(self) -> None:
        inbox: Inbox = self.server.state  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if inbox.hang is not None:
            inbox.hang.wait(30)
        with inbox.lock:
            inbox.messages.append(json.loads(body))
        self.reply(200, b"{}", {"Content-Type": "application/json"})
