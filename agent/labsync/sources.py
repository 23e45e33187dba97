"""Where the lab keeps its members: a CSV or XLSX file, an http(s) URL of one, or
Fabman (agent.labsync.fabman). Each source gives a `Listing`: the members in
their JSON shape, each with its place (`FILE row N`) for error messages.

An http(s) source asks with the ETag and Last-Modified of the last good answer
(a conditional GET), kept in a state file of its own with that answer's body:
"304 Not Modified" costs the lab's server nothing and reuses the body. An
error status, an HTML page (a login or error page) or a body that is not a
member table is refused; the state keeps the last good answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.members.snapshot import MAX_BYTES
from agent.members.table import (
    DateOrder,
    TableError,
    member_objects,
    read_csv,
    read_xlsx,
)

Row = tuple[str, dict[str, Any]]
TIMEOUT_S = 30
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class SourceError(ValueError):
    """The source gave nothing usable; the message names it and says why."""


class SourceUnreachable(SourceError):
    """The source could not be asked (no connection, no answer, still rate-limited): a
    failure to try again later (exit 1), not a bad list."""


@dataclass
class Listing:
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    fresh: bool = True  # False when the source said "not modified" and the kept copy was used


class Source(Protocol):
    name: str

    def fetch(self) -> Listing: ...


def _listing(data: bytes, kind: str, name: str, date_order: DateOrder | None) -> Listing:
    if len(data) > MAX_BYTES:
        raise SourceError(f"{name}: {len(data) / 2**20:.1f} MiB, larger than 32 MiB")
    try:
        table = read_xlsx(data, name) if kind == "xlsx" else read_csv(data, name)
        return Listing(member_objects(table, date_order), table.warnings)
    except TableError as err:
        raise SourceError(str(err)) from None


def _kind(name: str, data: bytes) -> str:
    """xlsx or csv, by the name's extension, else by the bytes (a workbook is a zip)."""
    lowered = name.lower().split("?", 1)[0]
    if lowered.endswith(".xlsx"):
        return "xlsx"
    if lowered.endswith(".csv"):
        return "csv"
    return "xlsx" if data.startswith(b"PK\x03\x04") else "csv"


@dataclass
class FileSource:
    path: Path
    date_order: DateOrder | None = None

    @property
    def name(self) -> str:
        return str(self.path)

    def fetch(self) -> Listing:
        try:
            data = self.path.read_bytes()
        except OSError as err:
            raise SourceError(f"{self.path}: cannot read: {err.strerror or err}") from None
        return _listing(data, _kind(self.path.name, data), self.name, self.date_order)


@dataclass
class HttpSource:
    """A CSV or XLSX at an http(s) URL: a Google Sheet's "publish to the web" CSV link,
    a CRM's export. `state_dir` keeps the last good answer between runs."""

    url: str
    state_dir: Path
    date_order: DateOrder | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.url.split("?", 1)[0]

    def _state_files(self) -> tuple[Path, Path]:
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return self.state_dir / f"source-{key}.json", self.state_dir / f"source-{key}.body"

    def _kept(self) -> tuple[dict[str, Any], bytes | None]:
        meta_file, body_file = self._state_files()
        try:
            meta = json.loads(meta_file.read_text())
            return meta, body_file.read_bytes()
        except (OSError, ValueError):
            return {}, None

    def _keep(self, meta: dict[str, Any], body: bytes) -> None:
        """Body first, then its validators, each replaced whole (a crash leaves the old pair or
        validators without their body, which only costs a full download)."""
        meta_file, body_file = self._state_files()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, data in ((body_file, body), (meta_file, json.dumps(meta).encode())):
            temporary = path.with_suffix(path.suffix + ".new")
            with open(temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            temporary.replace(path)

    def fetch(self) -> Listing:
        import requests

        meta, kept = self._kept()
        headers = dict(self.headers)
        if kept is not None and meta.get("url") == self.url:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
        try:
            response = requests.get(self.url, headers=headers, timeout=TIMEOUT_S, stream=True)
            with response:
                body = response.raw.read(MAX_BYTES + 1, decode_content=True) if response.status_code == 200 else b""
        except requests.RequestException as err:
            raise SourceUnreachable(f"{self.name}: {err}") from None
        if response.status_code == 304 and kept is not None:
            listing = _listing(kept, meta.get("kind", "csv"), self.name, self.date_order)
            listing.fresh = False
            return listing
        if response.status_code != 200:
            raise SourceError(f"{self.name}: HTTP {response.status_code} {response.reason}")
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type in ("text/html", "application/xhtml+xml"):
            raise SourceError(f"{self.name}: an HTML page, not a member list (a login or error page?)")
        kind = "xlsx" if content_type == XLSX_TYPE else _kind(self.name, body)
        listing = _listing(body, kind, self.name, self.date_order)
        answer = {"url": self.url, "etag": response.headers.get("ETag"),
                  "last_modified": response.headers.get("Last-Modified"), "kind": kind}
        if (answer, body) != (meta, kept):  # a server without validators sends the same body each time
            try:
                self._keep(answer, body)
            except OSError as err:  # only an optimisation: the list itself is good
                listing.warnings.append(f"cannot keep the answer in {self.state_dir} ({err.strerror or err}): "
                                        "the next sync downloads it whole")
        return listing
