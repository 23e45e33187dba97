"""Simulated machines spread over worker processes, for fleets larger than one process holds.

One process hosts at most `MAX_AGENTS` agents (see agent/devtools/fleet/node.py), so
`MachinePool` starts a worker (`python -m agent.devtools.fleet.worker`) for every that
many. The parent drives a worker with one JSON object per line on its stdin,
`{"id": n, "op": ..., ...}`, and the worker answers each with `{"id": n,
"result": ...}` or `{"id": n, "error": "..."}` on its stdout. The ops:
`start` (one machine: its id, induction, storage, broker url and prefix; the
result is its index `i` in that worker), `tap` (a badge at machine `i`; the
result is the outbox's last seq right after the tap), `status` (machine `i`)
and `stop` (all of them; the worker then exits).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from agent.devtools.fleet import population as pop
from agent.devtools.fleet.node import DRAIN_S, MAX_AGENTS

STOP_S = DRAIN_S + 30  # a worker stops its agents at once; each may drain for drain_s


class _Worker:
    """The parent's side of one worker process: requests out, futures resolved by a reader thread."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "agent.devtools.fleet.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        self.count = 0  # machines started in it
        self._ids = itertools.count()
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="fleet-pool-reader", daemon=True)
        self._reader.start()

    def request(self, op: str, **fields: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            number = next(self._ids)
            self._pending[number] = future
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(json.dumps({"id": number, "op": op, **fields}) + "\n")
            except OSError as err:
                del self._pending[number]
                future.set_exception(RuntimeError(f"fleet worker {self.process.pid} is gone: {err}"))
        return future

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            answer = json.loads(line)
            with self._lock:
                future = self._pending.pop(answer["id"])
            if "error" in answer:
                future.set_exception(RuntimeError(answer["error"]))
            else:
                future.set_result(answer["result"])
        with self._lock:  # the worker exited: nothing more will be answered
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(RuntimeError(f"fleet worker {self.process.pid} exited"))

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(RuntimeError, TimeoutError):  # gone, or stuck: killed below
                self.request("stop").result(STOP_S)
            if self.process.stdin is not None:
                with contextlib.suppress(OSError):
                    self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)


class RemoteMachine:
    """A machine running in a worker: what the capacity measure needs of a SimMachine."""

    def __init__(self, worker: _Worker, index: int, machine_id: str) -> None:
        self.id = machine_id
        self._worker, self._index = worker, index

    def submit_tap(self, badge: str) -> Future[int]:
        return self._worker.request("tap", i=self._index, badge=badge)

    def status(self) -> dict[str, Any]:
        return self._worker.request("status", i=self._index).result(30)


class MachinePool:
    """Agents in worker processes of at most `per_worker` each; `close()` stops them all."""

    def __init__(self, root: Path, url: str, prefix: str, per_worker: int = MAX_AGENTS) -> None:
        if not 0 < per_worker <= MAX_AGENTS:
            raise ValueError(f"per_worker must be 1..{MAX_AGENTS}, not {per_worker}")
        self.root, self.url, self.prefix, self.per_worker = root, url, prefix, per_worker
        self._workers: list[_Worker] = []

    @property
    def processes(self) -> list[subprocess.Popen[str]]:
        return [worker.process for worker in self._workers]

    def start(self, specs: list[pop.Machine], timeout: float = 120.0) -> list[RemoteMachine]:
        """Start one machine per spec, filling the last worker before starting another."""
        machines, started = [], []
        for spec in specs:
            if not self._workers or self._workers[-1].count >= self.per_worker:
                self._workers.append(_Worker())
            worker = self._workers[-1]
            started.append(worker.request("start", machine=spec.id, induction=spec.induction,
                                          storage=str(self.root / spec.id), url=self.url, prefix=self.prefix))
            machines.append(RemoteMachine(worker, worker.count, spec.id))
            worker.count += 1
        for future in started:
            future.result(timeout)
        return machines

    def close(self) -> None:
        """Stop every worker's agents (the workers stop theirs at the same time)."""
        stopping = [threading.Thread(target=worker.stop) for worker in self._workers]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        self._workers = []
