"""`python -m agent.devtools.fleet.worker`: simulated machines in a process of their own, driven by
JSON lines on stdin (the protocol is in agent/devtools/fleet/pool.py, the parent's side)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from agent.devtools.fleet.node import SimMachine


def serve(lines: IO[str], out: IO[str]) -> None:
    machines: list[SimMachine] = []
    write_lock = threading.Lock()

    def answer(number: int, result: Any = None, error: BaseException | None = None) -> None:
        reply = {"id": number, "error": f"{type(error).__name__}: {error}"} if error else {"id": number, "result": result}
        with write_lock:
            out.write(json.dumps(reply) + "\n")
            out.flush()

    def when_done(number: int, future: Future[Any]) -> None:
        error = future.exception()
        answer(number, None if error else future.result(), error)

    for line in lines:
        request = json.loads(line)
        number, op = request["id"], request["op"]
        try:
            if op == "start":
                machine = SimMachine(request["machine"], request["induction"], Path(request["storage"]),
                                     request["url"], request["prefix"])
                machines.append(machine)
                machine.start()
                answer(number, len(machines) - 1)
            elif op == "tap":
                future = machines[request["i"]].submit_tap(request["badge"])
                future.add_done_callback(lambda done, number=number: when_done(number, done))
            elif op == "status":
                answer(number, machines[request["i"]].status())
            elif op == "stop":
                for machine in machines:
                    machine.stop(wait=False)
                for machine in machines:
                    machine.join()
                answer(number, len(machines))
                return
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as err:  # noqa: BLE001 - answered to the parent, which raises it
            answer(number, error=err)
    for machine in machines:  # stdin closed without a stop: the parent is gone
        machine.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="fleet worker %(process)d: %(name)s: %(message)s")
    serve(sys.stdin, sys.stdout)
