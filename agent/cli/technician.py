"""Technicians' tools: follow the logs live, lock, unlock, end a session remotely."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click

from agent.cli.options import (
    InputError,
    RuntimeFailure,
    broker_option,
    json_option,
    parse_broker,
    password_file_option,
    prefix_option,
    who,
)


@click.command()
@click.argument("what", type=click.Choice(["tail"]))
@broker_option()
@password_file_option
@prefix_option
@click.option("--machine", help="Only this machine's events.")
@json_option
def logs(what: str, broker_url: str, password_file: str | None, topic_prefix: str,
         machine: str | None, as_json: bool) -> None:
    """Follow usage events live (`logs tail`), one line each, until Ctrl-C.

    Lines name members as the retained member list does (with --json, events are
    printed exactly as published).
    """
    from agent.cli.text import event_line, shown
    from agent.link.broker import disconnect, make_client
    from agent.link.topics import ANY, Topics

    broker = parse_broker(broker_url, password_file)
    topics = Topics(topic_prefix)
    topic = topics.events(machine or ANY)
    client = make_client(broker)
    failed: list[str] = []
    done = threading.Event()
    names: dict[str, str] = {}

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            failed.append(f"broker {broker} refused the connection: {reason_code}")
            done.set()
        else:
            client.subscribe([(topic, 1)] + ([] if as_json else [(topics.members, 1)]))

    def on_message(client, userdata, message) -> None:
        if message.topic == topics.members:
            from agent.members.snapshot import member_names

            found = member_names(message.payload)
            if found is not None:  # a list the agents would refuse leaves the last good one's names
                names.clear()
                names.update(found)
            return
        if as_json:
            sys.stdout.write(message.payload.decode("utf-8", "replace") + "\n")
        else:
            try:
                line = event_line(json.loads(message.payload), names)
            except (ValueError, TypeError, AttributeError):
                line = shown(f"(unreadable event on {message.topic})")
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        click.echo(f"following {topic} on {broker} (Ctrl-C to stop)", err=True)

    client.on_connect, client.on_message, client.on_subscribe = on_connect, on_message, on_subscribe
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as err:
        raise RuntimeFailure(f"cannot reach broker {broker}: {err}") from None
    client.loop_start()
    done.wait()
    disconnect(client)
    if failed:
        raise RuntimeFailure(failed[0])


STATUS_WAIT_S = 3.0  # how long the CLI waits for a machine's retained status


def send_command(machine: str, kind: str, reason: str, by: str | None, now: bool, broker_url: str,
          password_file: str | None, topic_prefix: str, sign_key: Path | None, force: bool,
          member_id: str | None = None) -> None:
    """Send a command to `machine`, timed (ts) and, when it ends a session, aimed at the
    session its retained status shows. A machine with no retained status, or no session
    to end, is a mistake (exit 2) unless `force`."""
    import datetime as dt

    from agent.core.model import MACHINE_ID_RULE, is_machine_id
    from agent.core.timespec import parse_rfc3339
    from agent.link.broker import BrokerUnreachable
    from agent.link.commands import MAX_REASON, Command
    from agent.link.publish import PublishError, publish_acknowledged
    from agent.link.retained import read_retained
    from agent.link.topics import Topics

    if not is_machine_id(machine):
        raise InputError(f"MACHINE: {machine!r} is not a machine id ({MACHINE_ID_RULE})")
    if len(reason) > MAX_REASON:
        raise InputError(f"--reason: at most {MAX_REASON} characters ({len(reason)} given)")
    broker = parse_broker(broker_url, password_file)
    key = None
    if sign_key is not None:
        from agent.signing import SignatureError, load_private_key

        try:
            key = load_private_key(sign_key)
        except (SignatureError, ValueError, OSError) as err:
            raise InputError(f"--sign-key: {err}") from None
    topics = Topics(topic_prefix)
    try:
        status = _status(read_retained(broker, topics.status(machine), STATUS_WAIT_S))
    except BrokerUnreachable as err:
        raise RuntimeFailure(str(err)) from None
    if status is None and not force:
        raise InputError(f"no machine {machine} on this broker (no retained status on {topics.status(machine)} "
                         f"within {STATUS_WAIT_S:g} s): is the id right? --force sends it all the same")
    state = (status or {}).get("state")
    session = None
    ends = kind == "end_session" or (kind == "lock" and now)
    if ends and state == "in_use" and isinstance(status.get("since"), str):
        try:
            session = parse_rfc3339(status["since"])
        except ValueError:
            session = None
    if ends and session is None and not force:
        raise InputError(f"{machine} shows no session in progress (state {state or 'unknown'}): nothing to end"
                         + (" (use lock without --now to lock it)" if kind == "lock" else "")
                         + "; --force ends whatever session is in progress when it arrives")
    if state == "offline":
        click.echo(f"warning: {machine} is offline: it refuses the command unless it returns within its "
                   "[commands] max_age (60 s by default)", err=True)
    sent = dt.datetime.now(dt.timezone.utc)
    payload = Command(kind, who(by), reason, now, machine, sent, session,
                      member_id=member_id).as_payload()
    if key is not None:
        from agent.signing import sign_command

        payload = sign_command(payload, key, sent)
    try:
        publish_acknowledged(broker, topics.commands(machine), json.dumps(payload).encode(), retain=False)
    except PublishError as err:
        raise RuntimeFailure(str(err)) from None
    aimed = f" (the session that began {status['since']})" if session is not None else ""
    click.echo(f"{kind} sent to {machine}{aimed}")


def _status(payload: bytes | None) -> dict | None:
    """A retained status as a dict; None when there is none (or it is not a JSON object)."""
    if payload is None:
        return None
    try:
        status = json.loads(payload)
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


def _command_options(f):
    for option in reversed([
        broker_option(), password_file_option, prefix_option,
        click.option("--by", help="Who is asking (default: your user name)."),
        click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Sign the command (machines with a public_key accept only signed ones)."),
        click.option("--force", is_flag=True,
                     help="Send it even when the broker holds no status for MACHINE, or (end-session, "
                          "lock --now) shows no session: it then ends whatever session is in progress."),
    ]):
        f = option(f)
    return f


@click.command()
@click.argument("machine")
@click.option("--reason", required=True, help="Why (shown to technicians, at most 200 characters).")
@click.option("--now", is_flag=True, help="End a session in progress at once (default: lock when it ends).")
@_command_options
def lock(machine: str, reason: str, now: bool, **options) -> None:
    """Lock MACHINE for maintenance: members are refused, staff still admitted."""
    send_command(machine, "lock", reason, options.pop("by"), now, **options)


@click.command()
@click.argument("machine")
@click.option("--reason", default="", help="Why (optional).")
@_command_options
def unlock(machine: str, reason: str, **options) -> None:
    """Unlock MACHINE."""
    send_command(machine, "unlock", reason, options.pop("by"), False, **options)


@click.command("end-session")
@click.argument("machine")
@click.option("--reason", default="", help="Why (optional).")
@_command_options
def end_session(machine: str, reason: str, **options) -> None:
    """End the session in progress on MACHINE (the relay goes off)."""
    send_command(machine, "end_session", reason, options.pop("by"), False, **options)
