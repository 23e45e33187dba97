"""Technicians' commands as they arrive over MQTT: validated before anything happens.

`parse` reads a command (and checks its signature when the machine has a
public key); `admit` checks its time, `aimed` the session it names. Both are
pure, and the agent calls them on its loop, with its own clock and state, so
that a command that waited in the broker while the Pi was off (the agent keeps
a persistent MQTT session) is judged when it arrives: a command older than
`[commands] max_age` is refused, and one that names a session no longer in
progress cannot end the next member's.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from agent.core.timespec import MissingOffset, parse_rfc3339, rfc3339

MAX_BYTES = 4096
MAX_REASON = 200
MAX_BY = 100
MAX_NONCE_CHARS = 128
MAX_MEMBER_ID = 200
KINDS = ("lock", "unlock", "end_session", "enrol")
KEYS = {"v", "command", "reason", "by", "now", "machine", "ts", "nonce", "sig", "session",
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
    ts: dt.datetime | None = None  # when it was sent; parse requires it
    session: dt.datetime | None = None  # end_session, lock now: the `since` of the session meant
    nonce: str | None = None  # signed commands: never obeyed twice
    member_id: str | None = None  # enrol: the member the next unknown badge is bound to

    @property
    def ends_a_session(self) -> bool:
        return self.kind == "end_session" or (self.kind == "lock" and self.now)

    def as_payload(self) -> dict[str, Any]:
        """The command's JSON object, without `nonce` and `sig` (agent.signing.sign_command adds them)."""
        payload: dict[str, Any] = {"v": 1, "command": self.kind, "reason": self.reason, "by": self.by}
        if self.now:
            payload["now"] = True
        if self.machine is not None:
            payload["machine"] = self.machine
        if self.ts is not None:
            payload["ts"] = rfc3339(self.ts)
        if self.session is not None:
            payload["session"] = rfc3339(self.session)
        if self.member_id is not None:
            payload["member_id"] = self.member_id
        return payload


def _time(obj: dict[str, Any], key: str) -> dt.datetime:
    text = obj[key]
    example = "2026-11-25T09:00:00Z"
    if not isinstance(text, str):
        raise CommandError(f"{key} must be an RFC 3339 UTC time such as {example}")
    try:
        moment = parse_rfc3339(text)
    except MissingOffset:
        raise CommandError(f"{key} {text!r} must be in UTC (end it with Z)") from None
    except ValueError:
        raise CommandError(f"{key} {text!r} is not an RFC 3339 time such as {example}") from None
    if moment.utcoffset() != dt.timedelta(0):
        raise CommandError(f"{key} {text!r} must be in UTC (end it with Z)")
    return moment


def parse(payload: bytes, machine: str, public_key: Any = None) -> Command:
    """A Command for `machine` from an MQTT payload, or CommandError saying what is wrong.

    Every command carries `ts`. With `public_key` the command must be signed,
    carry a `nonce` and name this machine, so that a signed command cannot be
    replayed onto another machine's topic.
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
    nonce = obj.get("nonce")
    if public_key is not None:
        from agent.signing import SignatureError, verify

        try:
            verify(obj, public_key)
        except SignatureError as err:
            raise CommandError(f"command refused: {err}") from None
        if not isinstance(nonce, str) or not nonce or len(nonce) > MAX_NONCE_CHARS:
            raise CommandError(f"command refused: a signed command needs a nonce, a non-empty string of at "
                               f"most {MAX_NONCE_CHARS} characters")
        if target is None:
            raise CommandError("command refused: a signed command must name its machine")
    else:
        nonce = None  # unsigned, it proves nothing
    if "ts" not in obj:
        raise CommandError("command has no ts (when it was sent): a command that cannot say its age is "
                           "refused, it may have waited for days")
    ts = _time(obj, "ts")
    session = _time(obj, "session") if obj.get("session") is not None else None
    return Command(kind, by, reason, immediate, target, ts, session, nonce, member_id)


def admit(command: Command, now: dt.datetime, max_age: float) -> None:
    """CommandError unless `command` was sent within `max_age` seconds of `now`, either way
    (a clock ahead on the sender's side is allowed as much as a command's wait)."""
    assert command.ts is not None, "parse requires ts"
    age = (now - command.ts).total_seconds()
    if age > max_age:
        raise CommandError(f"too old: sent {age:.0f} s ago, the limit is {max_age:.0f} s ([commands] max_age; "
                           "it waited while the machine was unreachable, was replayed, or a clock is wrong)")
    if -age > max_age:
        raise CommandError(f"from the future: sent {-age:.0f} s ahead of this machine's clock (at most "
                           f"{max_age:.0f} s allowed; check the clocks)")


def aimed(command: Command, in_progress: dt.datetime | None) -> None:
    """CommandError when `command` names a session (by its start) other than the one
    `in_progress` (its start, None when idle). A command that names none ends
    whatever session is in progress (`--force`)."""
    if not command.ends_a_session or command.session is None:
        return
    meant = rfc3339(command.session)  # as the status shows it: to the millisecond
    if in_progress is None or rfc3339(in_progress) != meant:
        now_running = (f"the session in progress began {rfc3339(in_progress)}" if in_progress
                       else "no session is in progress")
        raise CommandError(f"the session that began {meant} is not the one in progress ({now_running}): "
                           "nothing was ended")
