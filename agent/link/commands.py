"""Technicians' commands as they arrive over MQTT: validated before anything happens."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

MAX_BYTES = 4096
MAX_REASON = 200
MAX_BY = 100
MAX_MEMBER_ID = 200
KINDS = ("lock", "unlock", "end_session", "enrol")
KEYS = {"v", "command", "reason", "by", "now", "machine", "ts", "nonce", "sig",
        "member_id"}  # at the machine: enrol


class CommandError(ValueError):
    pass


@dataclass(frozen=True)
class Command:
    kind: str
    by: str
    reason: str
    now: bool = False
    machine: str | None = None  # the machine it is meant for; required when signed
    member_id: str | None = None  # enrol: the member the next unknown badge is bound to

    def as_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"v": 1, "command": self.kind, "reason": self.reason, "by": self.by}
        if self.now:
            payload["now"] = True
        if self.machine is not None:
            payload["machine"] = self.machine
        if self.member_id is not None:
            payload["member_id"] = self.member_id
        return payload


def parse(payload: bytes, machine: str, public_key: Any = None, guard: Any = None,
          now: dt.datetime | None = None) -> Command:
    """A Command for `machine` from an MQTT payload, or CommandError saying what is wrong.

    With `public_key` the command must be signed, fresh, not seen before
    (`guard` is an agent.signing.ReplayGuard) and name this machine, so that
    a signed command cannot be replayed onto another machine's topic.
    """
    if len(payload) > MAX_BYTES:
        raise CommandError(f"command of {len(payload)} bytes is larger than {MAX_BYTES}")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as err:
        raise CommandError(f"command is not JSON: {err}") from None
    except RecursionError:
        raise CommandError("command is nested too deeply") from None
    if not isinstance(obj, dict):
        raise CommandError("command is not a JSON object")
    unknown = set(obj) - KEYS
    if unknown:
        raise CommandError(f"command has unknown keys: {', '.join(sorted(unknown))}")
    if type(obj.get("v")) is not int or obj["v"] != 1:
        raise CommandError(f"command version {obj.get('v')!r} is not 1")
    kind = obj.get("command")
    if kind not in KINDS:
        raise CommandError(f"unknown command {kind!r} (known: {', '.join(KINDS)})")
    reason, by, immediate = obj.get("reason", ""), obj.get("by", ""), obj.get("now", False)
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise CommandError(f"reason must be a string of at most {MAX_REASON} characters")
    if not isinstance(by, str) or not by or len(by) > MAX_BY:
        raise CommandError(f"by must be a non-empty string of at most {MAX_BY} characters")
    if not isinstance(immediate, bool):
        raise CommandError("now must be true or false")
    member_id = obj.get("member_id")
    if kind == "enrol":
        if not isinstance(member_id, str) or not member_id.strip() or len(member_id) > MAX_MEMBER_ID:
            raise CommandError(f"enrol needs member_id, a member id of at most {MAX_MEMBER_ID} characters")
    elif member_id is not None:
        raise CommandError(f"member_id is for enrol, not {kind}")
    target = obj.get("machine")
    if target is not None and target != machine:
        raise CommandError(f"command is for machine {target!r}, not {machine!r}")
    if public_key is not None:
        from agent.signing import SignatureError, verify

        try:
            verify(obj, public_key)
            if not isinstance(obj.get("ts"), str) or not isinstance(obj.get("nonce"), str):
                raise SignatureError("a signed command needs ts and nonce")
            guard.check(obj["ts"], obj["nonce"], now or dt.datetime.now(dt.timezone.utc))
        except SignatureError as err:
            raise CommandError(f"command refused: {err}") from None
        if target is None:
            raise CommandError("command refused: a signed command must name its machine")
    return Command(kind, by, reason, immediate, target, member_id)
