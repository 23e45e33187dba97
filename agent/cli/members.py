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
from agent.link.topics import Topics


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


def _load(file: Path, version: int | None, public_key=None, date_order: str | None = None):
    from agent.members.snapshot import SnapshotError, load_file
    from agent.members.table import DateOrder

    try:
        snapshot = load_file(file, version=version, public_key=public_key,
                             date_order=DateOrder(date_order) if date_order else None)
    except SnapshotError as err:
        raise InputError(str(err)) from None
    for warning in snapshot.warnings:
        click.echo(f"warning: {warning}", err=True)
    return snapshot


def date_order_option(f):
    return click.option("--date-order", type=click.Choice(["dmy", "mdy"]),
                        help="How to read dates such as 01/02/2027 when no date in the file settles it "
                             "(a first number over 12 is a day; 30.06.2027 is always day first).")(f)


def _is_table(file: Path) -> bool:
    return file.suffix.lower() in (".csv", ".xlsx")


@members.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@click.option("--version", type=click.IntRange(min=1), help="The list's version (CSV or XLSX only; default: now, in Unix time).")
def import_(file: Path, config_path: Path, version: int | None) -> None:
    """Load a CSV, XLSX or JSON member list into this agent's cache (a site without a broker).

    The version must grow, as for a published list; the agent records a
    members_updated (or members_rejected) event.
    """
    import datetime as dt

    from agent.daemon.control import ControlError, NotRunning, request

    config = load_config(config_path)
    if _is_table(file) and version is None:
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


def _next_version(broker, topic: str) -> int:
    """The version for a new table list: above the retained one, and above any list made this
    second (Unix milliseconds), so two lists published in one second still differ."""
    import datetime as dt
    import json

    from agent.link.broker import BrokerUnreachable
    from agent.link.retained import read_retained
    from agent.members.version import next_version

    try:
        payload = read_retained(broker, topic)
    except BrokerUnreachable as err:
        raise RuntimeFailure(str(err)) from None
    try:
        retained = json.loads(payload)["version"] if payload else None
    except (ValueError, TypeError, KeyError):
        retained = None  # not a list: the new one replaces it
    return next_version(retained if isinstance(retained, int) else None, dt.datetime.now(dt.timezone.utc))


@members.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@broker_option()
@password_file_option
@prefix_option
@click.option("--version", type=click.IntRange(min=1),
              help="The list's version (CSV or XLSX only; default: above the retained version, "
                   "in Unix milliseconds).")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the list with this private key (fabpass keys generate).")
@click.option("--hash-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Publish badges as keyed hashes made with this site key (the machines' "
                   "badge_hash_key_file), so that no UID crosses the broker.")
@date_order_option
def publish(file: Path, broker_url: str, password_file: str | None, topic_prefix: str,
            version: int | None, sign_key: Path | None, hash_key: Path | None, date_order: str | None) -> None:
    """Validate a CSV, XLSX or JSON member list and publish it as the retained snapshot."""
    from agent.cli.options import parse_broker
    from agent.link.publish import PublishError, publish_acknowledged
    from agent.members.snapshot import SnapshotError, to_json

    broker = parse_broker(broker_url, password_file)
    if _is_table(file) and version is None:
        version = _next_version(broker, Topics(topic_prefix).members)
    snapshot = _load(file, version, date_order=date_order)
    if _is_table(file):
        import dataclasses
        import datetime as dt

        from agent.core.timespec import rfc3339

        snapshot = dataclasses.replace(snapshot, generated_at=rfc3339(dt.datetime.now(dt.timezone.utc)))
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
    from agent.core.session import State
    from agent.daemon.clock import SimulatedClock, SystemClock, now
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


def _source(spec: str, state_dir: Path | None, token_file: Path | None, date_order: str | None):
    """A member source from --source: a file, an http(s) URL, or fabman+https://…/api/v1."""
    import os

    from agent.members.table import DateOrder

    order = DateOrder(date_order) if date_order else None
    if spec.startswith("fabman+"):
        from agent.labsync.fabman import FabmanSource

        token = (token_file.read_text(encoding="utf-8").strip() if token_file
                 else os.environ.get("FABMAN_API_KEY", ""))
        if not token:
            raise InputError("--source: a Fabman source needs its API key: --token-file FILE or FABMAN_API_KEY")
        return FabmanSource(spec.removeprefix("fabman+"), token)
    if spec.startswith(("http://", "https://")):
        from agent.labsync.sources import HttpSource

        directory = state_dir or Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0]
                                      or Path.home() / ".local" / "state" / "fabpass")
        headers = {}
        if token_file:
            headers["Authorization"] = f"Bearer {token_file.read_text(encoding='utf-8').strip()}"
        return HttpSource(spec, Path(directory), order, headers)
    from agent.labsync.sources import FileSource

    path = Path(spec)
    if path.suffix.lower() not in (".csv", ".xlsx"):
        raise InputError(f"--source: {spec}: a .csv or .xlsx file, an http(s) URL of one, "
                         "or fabman+https://fabman.io/api/v1")
    return FileSource(path, order)


def _sign_key(path: Path | None):
    if path is None:
        return None
    from agent.signing import SignatureError, load_private_key

    try:
        return load_private_key(path)
    except (SignatureError, ValueError, OSError) as err:
        raise InputError(f"--sign-key: {err}") from None


def _notifier(urls: tuple[str, ...]):
    if not urls:
        return None
    from agent.logbook.notify import BadNotifyURL, Notifier, apprise_sender

    try:
        return Notifier(apprise_sender(urls))
    except BadNotifyURL as err:
        raise InputError(f"--notify: {err}") from None


@members.command()
@click.option("--source", "source_spec", required=True, metavar="SRC", envvar="FABPASS_SYNC_SOURCE",
              help="A .csv or .xlsx file, an http(s) URL of one, or fabman+https://fabman.io/api/v1; "
                   "or FABPASS_SYNC_SOURCE.")
@click.option("--broker", "broker_url", required=True, metavar="URL", envvar="FABPASS_SYNC_BROKER",
              help="mqtt://fabpass-admin@host or mqtts://…; or FABPASS_SYNC_BROKER. The password comes "
                   "from --password-file or FABPASS_MQTT_PASSWORD.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False), envvar="FABPASS_SYNC_PASSWORD_FILE",
              help="A file holding the broker password; or FABPASS_SYNC_PASSWORD_FILE.")
@prefix_option
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), envvar="FABPASS_SIGN_KEY",
              help="Sign the list with this private key (fabpass keys generate); or FABPASS_SIGN_KEY.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), envvar="FABPASS_LOGBOOK_DB",
              help="The logbook: merge the badges and inductions machines granted that the source "
                   "does not hold yet; or FABPASS_LOGBOOK_DB.")
@click.option("--dry-run", is_flag=True, help="Print what would change; publish nothing.")
@click.option("--max-shrink", type=click.FloatRange(0, 100), default=10.0, show_default=True, metavar="PCT",
              help="Refuse (exit 2) a list that drops more than this percent of the members.")
@click.option("--every", metavar="SPAN", envvar="FABPASS_SYNC_EVERY",
              help="Keep running and sync at this interval (e.g. 15m); a bad source is logged and "
                   "notified, and the last good list stays in force.")
@click.option("--notify", "notify_urls", multiple=True, metavar="URL",
              help="With --every: an Apprise URL told when a sync fails (repeatable).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where an http(s) source's last answer is kept for conditional requests "
                   "(default $STATE_DIRECTORY or ~/.local/state/fabpass).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="FABPASS_SYNC_TOKEN_FILE",
              help="A file holding an API key: Fabman's, or a bearer token for an http(s) source; "
                   "or FABPASS_SYNC_TOKEN_FILE (for Fabman also FABMAN_API_KEY, the key itself).")
@date_order_option
def sync(source_spec: str, broker_url: str, password_file: str | None, topic_prefix: str,
         sign_key: Path | None, db_path: Path | None, dry_run: bool, max_shrink: float, every: str | None,
         notify_urls: tuple[str, ...], state_dir: Path | None, token_file: Path | None,
         date_order: str | None) -> None:
    """Publish the member list straight from the lab's own system.

    Prints what changes against the retained list (members added, removed,
    changed; inductions no machine asks for) and publishes a new version only
    when something changed or the retained list is more than a day old.
    """
    from agent.cli.options import parse_broker
    from agent.labsync.sync import Target

    every_s = None
    if every is not None:
        from agent.core.timespec import parse_duration

        try:
            every_s = parse_duration(every)
        except ValueError as err:
            raise InputError(f"--every: {err}") from None
        if every_s < 10:
            raise InputError("--every: at least 10s")
    if notify_urls and every_s is None:
        raise InputError("--notify: only with --every (a one-shot sync says what failed by its exit status)")
    target = Target(parse_broker(broker_url, password_file), topic_prefix, _sign_key(sign_key))
    source = _source(source_spec, state_dir, token_file, date_order)
    if every_s is None:
        _sync_once(source, target, db_path, dry_run, max_shrink)
    else:
        _sync_every(source, target, db_path, dry_run, max_shrink, every_s, _notifier(notify_urls))


def _sync_once(source, target, db_path, dry_run, max_shrink) -> None:
    from agent.labsync.sources import SourceError
    from agent.labsync.sync import SyncFailed, SyncRefused, sync_once

    try:
        plan = sync_once(source, target, db_path, dry_run, max_shrink)
    except (SourceError, SyncRefused) as err:
        raise InputError(str(err)) from None
    except SyncFailed as err:
        raise RuntimeFailure(str(err)) from None
    for line in plan.lines():
        click.echo(line)
    version, count = plan.snapshot.version, plan.snapshot.count
    if plan.published:
        click.echo(f"published version {version}: {count} members{' (signed)' if target.sign_key else ''} "
                   f"to {target.broker} ({plan.why})")
    elif plan.why:
        click.echo(f"dry run: would publish version {version}: {count} members ({plan.why})")
    else:
        click.echo(f"nothing to publish: the retained list (version {plan.retained_version}) is current")


def _sync_every(source, target, db_path, dry_run, max_shrink, every_s: float, notifier) -> None:
    import logging
    import signal
    import sys
    import threading

    from agent.labsync.sources import SourceError
    from agent.labsync.sync import SyncFailed, SyncRefused, sync_once

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("fabpass.sync")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if notifier:
        notifier.start()
    log.info("syncing %s every %.0f s", source.name, every_s)
    try:
        while not stop.is_set():
            try:
                plan = sync_once(source, target, db_path, dry_run, max_shrink)
                for line in plan.lines():
                    log.info("%s", line)
                if plan.published:
                    log.info("published version %s: %s members (%s)", plan.snapshot.version,
                             plan.snapshot.count, plan.why)
            except (SourceError, SyncRefused, SyncFailed) as err:
                log.error("sync failed; the last good list stays in force: %s", err)
                if notifier:
                    notifier.submit("members sync", "member list sync failed",
                                    f"{err}\nNothing was published; the last good list stays in force.")
            stop.wait(every_s)
    finally:
        if notifier:
            notifier.stop()


@members.command()
@click.option("--db", "db_path", required=True, envvar="FABPASS_LOGBOOK_DB",
              type=click.Path(dir_okay=False, path_type=Path), help="The logbook database; or FABPASS_LOGBOOK_DB.")
@click.option("--json", "fmt", flag_value="json", help="A JSON array of objects.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV, to paste into the lab's spreadsheet.")
def pending(db_path: Path, fmt: str | None) -> None:
    """What machines granted (enrolled badges, inductions) that the lab's source does not hold yet.

    An entry leaves once `members sync --db` finds it in the source.
    """
    from agent.logbook.grants import KEYS
    from agent.logbook.grants import pending as pending_grants
    from agent.logbook.store import LogbookMissing, open_db

    try:
        db = open_db(db_path)
    except LogbookMissing as err:
        raise InputError(str(err)) from None
    with db:
        rows = pending_grants(db)
    if fmt == "json":
        print_json(rows)
    elif fmt == "csv":
        from agent.cli.text import csv_text

        click.echo(csv_text(KEYS, rows), nl=False)
    elif not rows:
        click.echo("nothing pending: the source holds everything the machines granted")
    else:
        from agent.cli.text import table

        click.echo(table(["KIND", "MEMBER", "VALUE", "EXPIRES", "BY", "MACHINE", "WHEN"],
                         [[r["kind"], r["member_id"], r["value"], r["expires"] or "", r["by"] or "",
                           r["machine"], r["ts"]] for r in rows]))
