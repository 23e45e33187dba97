"""The local control socket: how `fabpass tap`, `status`, `members check` and
`members import` talk to the agent running with a given config.

One JSON request per connection, one JSON answer: `{"ok": true, "result": …}`
or `{"ok": false, "error": "…", "usage": bool}` (usage errors exit 2).
The socket lives in the storage dir, so only users who may read the agent's
state may talk to it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_NAME = "agent.sock"
MAX_REQUEST = 64 * 1024

Handler = Callable[[dict[str, Any]], Any]


class ControlError(Exception):
    """The agent refused a request; `usage` when the request itself was wrong (exit 2)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class NotRunning(ConnectionError):
    pass


def socket_path(storage_dir: Path) -> Path:
    return Path(storage_dir) / SOCKET_NAME


class ControlServer:
    def __init__(self, storage_dir: Path, handler: Handler) -> None:
        import socketserver  # the agent's side only: the command line just connects

        self.path = socket_path(storage_dir)
        handle = handler

        class _Request(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_REQUEST)
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ControlError("a request is a JSON object", usage=True)
                    answer = {"ok": True, "result": handle(request)}
                except ControlError as err:
                    answer = {"ok": False, "error": str(err), "usage": err.usage}
                except ValueError as err:
                    answer = {"ok": False, "error": f"bad request: {err}", "usage": True}
                except Exception as err:  # the agent goes on; the caller hears why
                    log.exception("control request failed")
                    answer = {"ok": False, "error": f"the agent could not do it: {err}", "usage": False}
                self.wfile.write(json.dumps(answer).encode() + b"\n")

        self.path.unlink(missing_ok=True)  # left by an agent that crashed
        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), _Request)
        self._server.daemon_threads = True
        os.chmod(self.path, 0o660)
        self._thread = threading.Thread(target=self._server.serve_forever, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)


def request(storage_dir: Path, payload: dict[str, Any], timeout: float = 15.0) -> Any:
    """Send one request to the agent; raises NotRunning or ControlError."""
    path = socket_path(storage_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(f"no agent is running with storage dir {storage_dir}") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not answer["ok"]:
        raise ControlError(answer["error"], answer.get("usage", False))
    return answer["result"]
