"""`fabpass members import|publish|refresh|check|enrol`: the lab admin's member list."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.options import (
    InputError,
    RuntimeFailure,
    broker_option,
    config_option,
    json_option,
    load_config,
    password_file_option,
    prefix_option,
    print_json,
)
from agent.members.version import MAX_VERSION


@click.group()
def members() -> None:
    """Load, publish and check the member list; enrol a badge at a machine."""


def _storage(config, create: bool):
    """The machine's storage opened without its agent (agent.daemon.storage)."""
    from agent.daemon.storage import Storage
    from agent.members.badgehash import BadgeKeyError

    try:
        return Storage(config, create)
    except BadgeKeyError as err:
        raise InputError(f"members.badge_hash_key_file: {err}") from None


def _load(file: Path, version: int | None, public_key=None):
    from agent.members.snapshot import SnapshotError, load_file

    try:
        return load_file(file, version=version, public_key=public_key)
    except SnapshotError as err:
        raise InputError(str(err)) from None


@members.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@click.option("--version", type=click.IntRange(min=1, max=MAX_VERSION),
              help="The list's version (CSV only; default: now in Unix milliseconds, or the cached version + 1 "
                   "when that is larger).")
def import_(file: Path, config_path: Path, version: int | None) -> None:
    """Load a CSV or JSON member list into this agent's cache (a site without a broker).

    The version must grow, as for a published list; the agent records a
    members_updated (or members_rejected) event.
    """
    import datetime as dt

    from agent.daemon.control import ControlError, NotRunning, request

    config = load_config(config_path)
    try:
        result = request(config.storage.dir, {"op": "import", "path": str(file.resolve()), "version": version})
    except ControlError as err:
        raise InputError(str(err)) from None
    except NotRunning:
        storage = _storage(config, create=True)
        try:
            result = storage.import_file(file.resolve(), version, dt.datetime.now(dt.timezone.utc)).as_dict()
        finally:
            storage.close()
    if result["error"]:
        raise InputError(result["error"])
    if not result["applied"]:
        click.echo(f"version {result['version']} is already in the cache: nothing to do")
        return
    click.echo(f"imported version {result['version']}: {result['count']} members")


def _sign_key(path: Path | None):
    """The private key in `path` (--sign-key), or None."""
    if path is None:
        return None
    from agent.signing import SignatureError, load_private_key

    try:
        return load_private_key(path)
    except (SignatureError, ValueError, OSError) as err:
        raise InputError(f"--sign-key: {err}") from None


def _retained_list(broker, topic: str) -> bytes | None:
    from agent.link.broker import BrokerUnreachable
    from agent.link.retained import read_retained

    try:
        return read_retained(broker, topic, timeout=RETAINED_WAIT_S)
    except BrokerUnreachable as err:
        raise RuntimeFailure(str(err)) from None


def _version_of(payload: bytes | None) -> int | None:
    """The version of a retained list; None when there is none or it cannot be read
    (agents refuse such a list too, so it bounds nothing)."""
    from agent.members.snapshot import SnapshotError, load_json

    if payload is None:
        return None
    try:
        return load_json(payload, check_members=False).version
    except SnapshotError as err:
        click.echo(f"warning: the retained list cannot be read ({err}); its version is not known", err=True)
        return None


def _publish(broker, topic: str, payload: bytes) -> None:
    from agent.link.publish import PublishError, publish_acknowledged

    try:
        publish_acknowledged(broker, topic, payload, retain=True)
    except PublishError as err:
        raise RuntimeFailure(str(err)) from None


RETAINED_WAIT_S = 10.0  # a retained list of 20 MB takes a while to arrive


@members.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@broker_option()
@password_file_option
@prefix_option
@click.option("--version", type=click.IntRange(min=1, max=MAX_VERSION),
              help="The list's version (CSV only; default: now in Unix milliseconds, or the retained "
                   "version + 1 when that is larger). It must be above the retained version.")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the list with this private key (fabpass keys generate).")
@click.option("--hash-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Publish badges as keyed hashes made with this site key (the machines' "
                   "badge_hash_key_file), so that no UID crosses the broker.")
def publish(file: Path, broker_url: str, password_file: str | None, topic_prefix: str,
            version: int | None, sign_key: Path | None, hash_key: Path | None) -> None:
    """Validate a CSV or JSON member list and publish it as the retained snapshot.

    Its version must be above the retained list's (agents refuse an older one):
    a CSV list without --version gets the next one, anything else that does not
    follow exits 2 and nothing is published. A CSV list is generated now (its
    generated_at, which max_list_age counts from).
    """
    import dataclasses
    import datetime as dt

    from agent.cli.options import parse_broker
    from agent.link.topics import Topics
    from agent.members.snapshot import SnapshotError, to_json
    from agent.members.version import VersionError, check_follows, next_version

    broker = parse_broker(broker_url, password_file)
    csv = file.suffix.lower() == ".csv"
    snapshot = _load(file, version if version is not None or not csv else 1)  # checked before the network
    key = _sign_key(sign_key)
    topic = Topics(topic_prefix).members
    retained = _version_of(_retained_list(broker, topic))
    try:
        if csv and version is None:
            snapshot = dataclasses.replace(snapshot, version=next_version(retained, dt.datetime.now(dt.timezone.utc)))
        else:
            check_follows(snapshot.version, retained, "--version" if version is not None else f"{file}: version")
    except VersionError as err:
        raise InputError(str(err)) from None
    if hash_key is not None:
        from agent.members.badgehash import BadgeHasher, BadgeKeyError

        try:
            snapshot = BadgeHasher.from_file(hash_key).snapshot(snapshot)
        except BadgeKeyError as err:
            raise InputError(f"--hash-key: {err}") from None
    if key is None and hash_key is None and not csv:
        payload = file.read_bytes()  # as written, so a list signed elsewhere keeps its signature
    else:
        try:
            payload = to_json(snapshot, key)
        except SnapshotError as err:
            raise InputError(str(err)) from None
    _publish(broker, topic, payload)
    click.echo(f"published version {snapshot.version}: {snapshot.count} members"
               f"{' (signed)' if key else ''} to {broker}")


@members.command()
@broker_option()
@password_file_option
@prefix_option
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the refreshed list with this private key; the retained list must carry its "
                   "signature (a list this key did not sign is never signed).")
def refresh(broker_url: str, password_file: str | None, topic_prefix: str, sign_key: Path | None) -> None:
    """Republish the retained list's members as a new version generated now.

    Machines with [members] max_list_age count a list's age from its
    generated_at: an agent that stays connected receives no list until the lab
    publishes one, so run this daily (deploy/fabpass-refresh.timer). The
    members are those retained, unchanged; a retained list that changes
    meanwhile is left alone (exit 1: run it again).
    """
    import dataclasses
    import datetime as dt
    import json

    from agent.cli.options import parse_broker
    from agent.core.timespec import rfc3339
    from agent.link.topics import Topics
    from agent.members.snapshot import SnapshotError, load_json, to_json
    from agent.members.version import VersionError, next_version

    broker = parse_broker(broker_url, password_file)
    key = _sign_key(sign_key)
    topic = Topics(topic_prefix).members
    payload = _retained_list(broker, topic)
    if payload is None:
        raise InputError(f"no member list is retained on {broker} ({topic}): publish one first "
                         "(fabpass members publish)")
    try:
        snapshot = load_json(payload, public_key=key.public_key() if key else None)
        if key is None and "sig" in json.loads(payload):
            raise InputError(f"the retained list on {broker} is signed: give --sign-key, or machines with a "
                             "public_key would refuse the refreshed list")
        now = dt.datetime.now(dt.timezone.utc)
        refreshed = dataclasses.replace(snapshot, version=next_version(snapshot.version, now),
                                        generated_at=rfc3339(now))
        fresh = to_json(refreshed, key)
    except SnapshotError as err:
        what = "not signed by --sign-key's key, so it is not signed again" if key else "not a valid list"
        raise InputError(f"the retained list on {broker} is {what}: {err}") from None
    except VersionError as err:
        raise InputError(str(err)) from None
    if _retained_list(broker, topic) != payload:
        raise RuntimeFailure(f"the retained list on {broker} changed while it was being refreshed; "
                             "nothing was published (run it again)")
    _publish(broker, topic, fresh)
    click.echo(f"refreshed version {snapshot.version} as version {refreshed.version} "
               f"({snapshot.count} members, generated {refreshed.generated_at}){' (signed)' if key else ''} "
               f"on {broker}")


@members.command()
@click.argument("badge")
@config_option
@json_option
def check(badge: str, config_path: Path, as_json: bool) -> None:
    """Would BADGE be granted on this machine now, and if not, why?

    With the agent running its state (lock, session) counts; without, the
    machine is taken as idle and unlocked.
    """
    from agent.core.model import BadBadge, normalise_badge
    from agent.daemon.clock import SystemClock, now
    from agent.daemon.control import ControlError, NotRunning, request

    config = load_config(config_path)
    try:
        badge = normalise_badge(badge)
    except BadBadge as err:
        raise InputError(str(err)) from None
    try:
        result = request(config.storage.dir, {"op": "check", "badge": badge})
    except ControlError as err:
        raise InputError(str(err)) from None
    except NotRunning:
        storage = _storage(config, create=False)
        try:
            trusted = not config.require_sync or SystemClock().synchronised()
            moment = now()
            result = storage.check(badge, storage.idle_state(moment), moment, trusted)
        finally:
            storage.close()
    from agent.cli.text import shown

    if as_json:
        print_json(result)
    elif result["granted"]:
        click.echo(shown(f"granted: {result['member_id']}"))
    else:
        who = f" ({result['member_id']})" if result["member_id"] else ""
        click.echo(shown(f"refused{who}: {result['reason']}"))


@members.command()
@click.argument("member_id")
@click.option("--machine", required=True, help="The machine whose reader the badge will be tapped on.")
@broker_option()
@password_file_option
@prefix_option
@click.option("--by", help="Who is enrolling (default: your user name).")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the command (machines with a public_key accept only signed ones).")
@click.option("--force", is_flag=True, help="Send it even when the broker holds no status for MACHINE.")
def enrol(member_id: str, machine: str, **options) -> None:
    """Bind the next unknown badge tapped on MACHINE within 60 s to MEMBER_ID.

    The member must be in the list; a badge the list already knows is refused
    (enrolment_refused). The badge is the member's on that machine at once, until
    a member list generated after it arrives: add it to the lab's list.
    """
    from agent.cli.technician import _send
    from agent.link.commands import MAX_MEMBER_ID

    if not member_id.strip() or len(member_id) > MAX_MEMBER_ID:
        raise InputError(f"MEMBER_ID: a member id of 1 to {MAX_MEMBER_ID} characters")
    _send(machine, "enrol", "", options.pop("by"), False, member_id=member_id, **options)
    click.echo(f"tap the badge on {machine} within 60 s")
