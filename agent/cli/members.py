"""`fabpass members import|publish|check`: the lab admin's member list."""

from __future__ import annotations

import time
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


@click.group()
def members() -> None:
    """Load, publish and check the member list."""


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
@click.option("--version", type=click.IntRange(min=1), help="The list's version (CSV only; default: now, in Unix time).")
def import_(file: Path, config_path: Path, version: int | None) -> None:
    """Load a CSV or JSON member list into this agent's cache (a site without a broker).

    The version must grow, as for a published list; the agent records a
    members_updated (or members_rejected) event.
    """
    import datetime as dt

    from agent.daemon.control import ControlError, NotRunning, request

    config = load_config(config_path)
    if file.suffix.lower() == ".csv" and version is None:
        version = int(time.time())
    try:
        result = request(config.storage.dir, {"op": "import", "path": str(file.resolve()), "version": version})
    except ControlError as err:
        raise InputError(str(err)) from None
    except NotRunning:
        storage = _storage(config, create=True)
        try:
            result = storage.import_list(lambda: _load(file, version, config.members.public_key),
                                         dt.datetime.now(dt.timezone.utc)).as_dict()
        finally:
            storage.close()
    if result["error"]:
        raise InputError(result["error"])
    if not result["applied"]:
        click.echo(f"version {result['version']} is already in the cache: nothing to do")
        return
    click.echo(f"imported version {result['version']}: {result['count']} members")


@members.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@broker_option()
@password_file_option
@prefix_option
@click.option("--version", type=click.IntRange(min=1), help="The list's version (CSV only; default: now, in Unix time).")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the list with this private key (fabpass keys generate).")
@click.option("--hash-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Publish badges as keyed hashes made with this site key (the machines' "
                   "badge_hash_key_file), so that no UID crosses the broker.")
def publish(file: Path, broker_url: str, password_file: str | None, topic_prefix: str,
            version: int | None, sign_key: Path | None, hash_key: Path | None) -> None:
    """Validate a CSV or JSON member list and publish it as the retained snapshot."""
    from agent.cli.options import parse_broker
    from agent.link.publish import PublishError, publish_acknowledged
    from agent.link.topics import Topics
    from agent.members.snapshot import SnapshotError, to_json

    broker = parse_broker(broker_url, password_file)
    if file.suffix.lower() == ".csv" and version is None:
        version = int(time.time())
    snapshot = _load(file, version)
    key = None
    if sign_key is not None:
        from agent.signing import SignatureError, load_private_key

        try:
            key = load_private_key(sign_key)
        except (SignatureError, ValueError, OSError) as err:
            raise InputError(f"--sign-key: {err}") from None
    if hash_key is not None:
        from agent.members.badgehash import BadgeHasher, BadgeKeyError

        try:
            snapshot = BadgeHasher.from_file(hash_key).snapshot(snapshot)
        except BadgeKeyError as err:
            raise InputError(f"--hash-key: {err}") from None
    if key is None and hash_key is None and file.suffix.lower() == ".json":
        payload = file.read_bytes()  # as written, so a list signed elsewhere keeps its signature
    else:
        try:
            payload = to_json(snapshot, key)
        except SnapshotError as err:
            raise InputError(str(err)) from None
    try:
        publish_acknowledged(broker, Topics(topic_prefix).members, payload, retain=True)
    except PublishError as err:
        raise RuntimeFailure(str(err)) from None
    click.echo(f"published version {snapshot.version}: {snapshot.count} members"
               f"{' (signed)' if key else ''} to {broker}")


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
    except NotRunning:  # only then the rules, the clock and the storage: the agent has them loaded
        from agent.core.session import State
        from agent.daemon.clock import SimulatedClock, SystemClock, now

        storage = _storage(config, create=False)
        try:
            clock = SimulatedClock() if config.simulate else SystemClock()
            result = storage.check(storage.badge_key(badge), State(), now(), clock.synchronised())
        finally:
            storage.close()
    if as_json:
        print_json(result)
    elif result["granted"]:
        click.echo(f"granted: {result['member_id']}")
    else:
        who = f" ({result['member_id']})" if result["member_id"] else ""
        click.echo(f"refused{who}: {result['reason']}")
