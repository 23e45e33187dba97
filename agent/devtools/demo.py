"""`fabpass demo`: a simulated laser cutter, a sample member list and scripted taps.

Everything is the real agent (policy, session machine, SQLite cache and
outbox, gpiozero with mock pins); only the clock is scripted, so that a
47-minute session takes no time to watch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from agent.config import HardwareConfig, parse
from agent.core.model import Instant
from agent.daemon.agent import Agent, link_for
from agent.devtools.machines import machine_toml
from agent.devtools.wait import wait_for
from agent.link.commands import Command

MACHINE = {"name": "Laser cutter (Trotec Speedy 400)", "max_session": "4h", "timezone": "Europe/Rome"}
INDICATORS = {"green": 5, "red": 6, "amber": 13, "buzzer": 19}
PREFIX = "fabpass-demo"  # with --broker: never the lab's own topics, logbook or billing
MEMBERS = {
    "v": 1, "version": 1, "generated_at": "2026-11-25T08:00:00Z",
    "members": [
        {"id": "m-0001", "name": "Ada Lovelace", "badges": ["04A1B2C3D4E5F6"], "status": "active",
         "expires": "2027-06-30", "roles": [], "inductions": {"laser": None, "cnc": "2027-01-31"}},
        {"id": "m-0002", "name": "Grace Hopper", "badges": ["DEADBEEF"], "status": "active",
         "expires": None, "roles": ["staff"], "inductions": {"laser": None}},
        {"id": "m-0003", "name": "Alan Turing", "badges": ["CAFEBABE"], "status": "active",
         "expires": None, "roles": [], "inductions": {"cnc": None}},
        {"id": "m-0004", "name": "Hedy Lamarr", "badges": ["0A0B0C0D"], "status": "suspended",
         "expires": None, "roles": [], "inductions": {"laser": None}},
        {"id": "m-0005", "name": "Linus Pauling", "badges": ["12345678"], "status": "active",
         "expires": None, "roles": [], "inductions": {"laser": "2026-10-31"}},
    ],
}
NAMES = {m["badges"][0]: m["name"] for m in MEMBERS["members"]}
NAMES_BY_ID = {m["id"]: m["name"] for m in MEMBERS["members"]}

# (minutes after the start, what happens)
SCRIPT: list[tuple[int, str, str]] = [
    (5, "tap", "04A1B2C3D4E5F6"),
    (12, "tap", "CAFEBABE"),
    (52, "tap", "04A1B2C3D4E5F6"),
    (60, "tap", "11223344"),
    (61, "tap", "0A0B0C0D"),
    (63, "tap", "12345678"),
    (70, "lock", "mirror cleaning"),
    (72, "tap", "04A1B2C3D4E5F6"),
    (75, "tap", "DEADBEEF"),
    (90, "tap", "DEADBEEF"),
    (95, "unlock", ""),
    (96, "tap", "04A1B2C3D4E5F6"),
    (99, "tap", "DEADBEEF"),
]


class ScriptedClock:
    def __init__(self, start: dt.datetime) -> None:
        self.wall, self.mono = start, 1000.0

    def __call__(self) -> Instant:
        return Instant(self.wall, self.mono)

    def advance_to(self, start: dt.datetime, minutes: int) -> None:
        target = start + dt.timedelta(minutes=minutes)
        self.mono += (target - self.wall).total_seconds()
        self.wall = target


def run_demo(echo: Callable[[str], None], broker_url: str | None = None, prefix: str = PREFIX) -> int:
    with tempfile.TemporaryDirectory(prefix="fabpass-demo-") as tmp:
        storage = Path(tmp)
        mqtt = {"mqtt": {"url": broker_url, "topic_prefix": prefix}} if broker_url else {}
        text = machine_toml("laser-1", storage, machine=MACHINE, indicators=INDICATORS, **mqtt)
        config = dataclasses.replace(parse(text, "demo.toml"), hardware=HardwareConfig(simulate=True))
        start = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.timezone.utc)
        clock = ScriptedClock(start)
        agent = Agent(config, clock=clock, link=link_for(config))
        relay_pin = agent.pins.pin(config.relay.pin)
        loop = threading.Thread(target=agent.run, name="demo-agent", daemon=True)
        loop.start()
        agent.started.wait(10)
        tz = config.tz

        def stamp() -> str:
            return clock.wall.astimezone(tz).strftime("%H:%M")

        def relay() -> str:
            # What the relay board sees: an active-low board is ON when its pin is low.
            return "ON " if relay_pin.state == (1 if config.relay.active_high else 0) else "off"

        echo(f"fabpass demo: {config.machine.name} ({config.machine.id}), simulated pins, "
             f"relay on BCM {config.relay.pin} (active-low)")
        where = f"{broker_url}, topics under {prefix}/" if broker_url else "none (events wait in the outbox)"
        echo(f"storage: {storage}  broker: {where}\n")
        payload = json.dumps(MEMBERS).encode()
        from agent.members.snapshot import load_json

        result = agent.import_members(lambda: load_json(payload))
        echo(f"{stamp()}  member list version {result['version']} loaded: {result['count']} members")
        holder, since = None, 0
        for minutes, kind, arg in SCRIPT:
            clock.advance_to(start, minutes)
            if kind == "tap":
                answer = agent.call(agent.tap, arg)
                who = NAMES.get(arg, "unknown badge")
                head = f"{stamp()}  {who:<14} taps {arg:<15}"
                if answer["action"] == "refused":
                    echo(f"{head} -> DENIED ({answer['reason']}), relay {relay()}  [red LED, 3 beeps]")
                elif answer["action"] == "started":
                    echo(f"{head} -> granted, relay {relay()}  [green LED, beep]")
                elif answer["member_id"] == holder:
                    echo(f"{head} -> session ended, relay {relay()}, {minutes - since} min")
                else:
                    echo(f"{head} -> staff ends {NAMES_BY_ID[holder]}'s session, relay {relay()}, "
                         f"{minutes - since} min")
                if answer["action"] == "started":
                    holder, since = answer["member_id"], minutes
            else:
                agent.call(agent.command, Command(kind, "technician", arg, ts=agent.clock().wall))
                echo(f"{stamp()}  technician {kind}s the machine{': ' + arg if arg else ''}")
        if broker_url:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not agent.outbox.unacknowledged, 10, "the broker", step=0.05)
        status = agent.call(agent.status)
        agent.stop()
        loop.join(10)
        echo(f"\n{status['last_seq']} events recorded (seq 1..{status['last_seq']}); "
             + (f"{status['outbox']} not yet acknowledged by the broker" if broker_url else
                "they wait in the outbox until a broker is configured (try --broker mqtt://localhost)"))
    return 0
