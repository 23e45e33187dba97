"""`fabpass members import|publish|refresh|check|sync|pending|dismiss|enrol`: the lab admin's member list."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agent.cli.options import (
    InputError,
    RuntimeFailure,
    broker_option,
    config_option,
    db_option,
    json_option,
    load_config,
    open_logbook,
    password_file_option,
    prefix_option,
    print_json,
    who,
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
@click.option("--version", type=click.IntRange(min=1, max=MAX_VERSION),
              help="The list's version (CSV or XLSX only; default: now in Unix milliseconds, or the cached "
                   "version + 1 when that is larger).")
def import_(file: Path, config_path: Path, version: int | None) -> None:
    """Load a CSV, XLSX or JSON member list into this agent's cache (a site without a broker).

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
              help="The list's version (CSV or XLSX only; default: now in Unix milliseconds, or the retained "
                   "version + 1 when that is larger). It must be above the retained version.")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the list with this private key (fabpass keys generate).")
@click.option("--hash-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Publish badges as keyed hashes made with this site key (the machines' "
                   "badge_hash_key_file), so that no UID crosses the broker.")
@date_order_option
def publish(file: Path, broker_url: str, password_file: str | None, topic_prefix: str,
            version: int | None, sign_key: Path | None, hash_key: Path | None, date_order: str | None) -> None:
    """Validate a CSV, XLSX or JSON member list and publish it as the retained snapshot.

    Its version must be above the retained list's (agents refuse an older one):
    a CSV or XLSX list without --version gets the next one, anything else that
    does not follow exits 2 and nothing is published. A CSV or XLSX list is
    generated now (its generated_at, which max_list_age counts from).
    """
    import dataclasses
    import datetime as dt

    from agent.cli.options import parse_broker
    from agent.link.topics import Topics
    from agent.members.snapshot import SnapshotError, to_json
    from agent.members.version import VersionError, check_follows, next_version

    broker = parse_broker(broker_url, password_file)
    csv = _is_table(file)
    snapshot = _load(file, version if version is not None or not csv else 1, date_order=date_order)  # checked before the network
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
        from agent.daemon.clock import SystemClock, now

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
        inducted = " (a tap now: inducted by the trainer whose session is open)" if result.get("action") == "inducted" else ""
        click.echo(shown(f"granted: {result['member_id']}{inducted}"))
    else:
        who = f" ({result['member_id']})" if result["member_id"] else ""
        click.echo(shown(f"refused{who}: {result['reason']}"))


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
    from agent.labsync.sources import SourceError, SourceUnreachable
    from agent.labsync.sync import SyncFailed, SyncRefused, sync_once

    try:
        plan = sync_once(source, target, db_path, dry_run, max_shrink)
    except SourceUnreachable as err:
        raise RuntimeFailure(str(err)) from None
    except (SourceError, SyncRefused) as err:
        raise InputError(str(err)) from None
    except SyncFailed as err:
        raise RuntimeFailure(str(err)) from None
    from agent.cli.text import shown

    for line in plan.lines():
        click.echo(shown(line))
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
@db_option
@click.option("--json", "fmt", flag_value="json", help="A JSON array of objects.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV, to paste into the lab's spreadsheet.")
def pending(db_path: Path, fmt: str | None) -> None:
    """What machines granted (enrolled badges, inductions) that the lab's source does not hold yet.

    An entry leaves once `members sync --db` finds it in the source, or once
    `members dismiss ID` refuses it (ID: the table's first column).
    """
    from agent.logbook.grants import KEYS
    from agent.logbook.grants import pending as pending_grants

    db = open_logbook(db_path)
    with db:
        rows = pending_grants(db)
    if fmt == "json":
        print_json(rows)
    elif fmt == "csv":
        from agent.logbook.queries import to_csv

        sys.stdout.write(to_csv(rows, KEYS))  # as written: click.echo would strip escapes when piped
        sys.stdout.flush()
    elif not rows:
        click.echo("nothing pending: the source holds everything the machines granted")
    else:
        from agent.cli.text import table

        click.echo(table(["ID", "KIND", "MEMBER", "VALUE", "EXPIRES", "BY", "MACHINE", "WHEN"],
                         [[r["event_id"][:8], r["kind"], r["member_id"], r["value"], r["expires"] or "",
                           r["by"] or "", r["machine"], r["ts"]] for r in rows]))


@members.command()
@click.argument("ids", nargs=-1, required=True)
@db_option
@click.option("--by", help="Who refuses them (default: your user name).")
def dismiss(ids: tuple[str, ...], db_path: Path, by: str | None) -> None:
    """Refuse what a machine granted: IDS from `members pending` (8 characters or more).

    The sync merges them no more, and the next list it publishes retires them on
    their machines (a list generated after a grant decides in its place).
    """
    import datetime as dt

    from agent.cli.text import shown
    from agent.logbook.grants import UnknownGrant
    from agent.logbook.grants import dismiss as dismiss_grants

    db = open_logbook(db_path)
    with db:
        try:
            done = dismiss_grants(db, ids, who(by), dt.datetime.now(dt.timezone.utc))
        except UnknownGrant as err:
            raise InputError(str(err)) from None
    for g in done:
        click.echo(shown(f"dismissed {g['kind']} {g['value']} for {g['member_id']} (granted on {g['machine']}): "
                         "the next `members sync --db` publishes a list that retires it, unless the lab's "
                         "source holds it: remove it there"))


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
    from agent.cli.technician import send_command
    from agent.link.commands import MAX_MEMBER_ID

    if not member_id.strip() or len(member_id) > MAX_MEMBER_ID:
        raise InputError(f"MEMBER_ID: a member id of 1 to {MAX_MEMBER_ID} characters")
    send_command(machine, "enrol", "", options.pop("by"), False, member_id=member_id, **options)
    click.echo(f"tap the badge on {machine} within 60 s")
