"""`fabpass logbook …`: the technicians' archive of every machine's events.

Each command is a thin call into agent.logbook. Times given without a UTC
offset are the logbook host's local time; JSON and CSV carry RFC 3339 UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import signal
import sqlite3
import sys
import threading
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.cli.options import (
    InputError,
    RuntimeFailure,
    broker_option,
    db_option,
    json_option,
    open_logbook,
    parse_broker,
    password_file_option,
    prefix_option,
    print_json,
)

F = TypeVar("F", bound=Callable[..., Any])


def since_until_options(f: F) -> F:
    f = click.option("--until", metavar="T", help="Up to T (ISO date or date-time, or a span such as 2h).")(f)
    return click.option("--since", metavar="T", help="From T (ISO date or date-time, or a span back from now such as 7d).")(f)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@functools.cache  # once per command: every cell of a table is shown in it
def _local_tz() -> dt.tzinfo:
    """The host's zone with its DST rules (from TZ or /etc/localtime), else today's UTC offset."""
    key = os.environ.get("TZ", "").lstrip(":")
    if not key and "/zoneinfo/" in os.path.realpath("/etc/localtime"):
        key = os.path.realpath("/etc/localtime").split("/zoneinfo/", 1)[1]
    try:
        return zoneinfo.ZoneInfo(key) if key else dt.datetime.now().astimezone().tzinfo
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.datetime.now().astimezone().tzinfo


def _when(option: str, text: str | None, now: dt.datetime) -> dt.datetime | None:
    from agent.core.timespec import parse_time

    if text is None:
        return None
    try:
        return parse_time(text, now, _local_tz())
    except ValueError as err:
        raise InputError(f"{option}: {err}") from None


def _local(ts: str | None) -> str:
    """An archived RFC 3339 time as the host's local 'YYYY-MM-DD HH:MM', for tables."""
    from agent.core.timespec import parse_rfc3339

    return parse_rfc3339(ts).astimezone(_local_tz()).strftime("%Y-%m-%d %H:%M") if ts else ""


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def _table(header: list[str], rows: list[list[Any]]) -> None:
    from agent.cli.text import table

    click.echo(table(header, rows))


@click.group()
def logbook() -> None:
    """The technicians' logbook: every machine's sessions and refusals, archived from MQTT."""


@logbook.command()
@broker_option()
@password_file_option
@prefix_option
@db_option
@click.option("--client-id", default="fabpass-logbook", show_default=True,
              help="The MQTT client id; the broker keeps this id's session while the logbook is down.")
@click.option("--session-expiry", default="14d", show_default=True, metavar="SPAN",
              help="How long the broker queues events for a stopped logbook.")
@click.option("--notify", "notify_urls", multiple=True, metavar="URL",
              help="Tell the technicians through this Apprise URL (slack://…, mailto://…, "
                   "json://host:port/path; repeatable): locks, out-of-order reports, refused lists, "
                   "storage errors, machines offline over 5 minutes, services due.")
@click.option("--thresholds", type=click.Path(dir_okay=False, path_type=Path),
              help="With --notify: a TOML file of service intervals ([service_every] laser-1 = \"200h\").")
@click.option("--homeassistant", "ha_prefix", is_flag=False, flag_value="homeassistant", default=None,
              metavar="[PREFIX]", help="Publish Home Assistant MQTT discovery for every machine under "
                                       "PREFIX (default homeassistant).")
@click.option("--keep", default="30d", show_default=True, metavar="SPAN",
              help="As the agents' [storage] keep: the marks of incarnations heard from within it are published.")
def run(broker_url: str, password_file: str | None, topic_prefix: str, db_path: Path,
        client_id: str, session_expiry: str, notify_urls: tuple[str, ...], thresholds: Path | None,
        ha_prefix: str | None, keep: str) -> None:
    """Collect every machine's events into the logbook until SIGTERM or SIGINT."""
    from agent.core.timespec import parse_duration
    from agent.link.topics import Topics
    from agent.logbook.collector import Collector

    try:
        expiry = int(parse_duration(session_expiry))
    except ValueError as err:
        raise InputError(f"--session-expiry: {err}") from None
    try:
        keep_s = parse_duration(keep)
    except ValueError as err:
        raise InputError(f"--keep: {err}") from None
    broker = parse_broker(broker_url, password_file)
    limits = _thresholds(thresholds)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        collector = Collector(broker, db_path, topic_prefix, client_id, expiry, keep_s)
    except sqlite3.Error as err:
        raise InputError(f"--db: {db_path}: {err}") from None
    alerts = homeassistant = None
    if notify_urls:
        from agent.logbook.alerts import Alerts
        from agent.logbook.notify import BadNotifyURL, Notifier, apprise_sender

        try:
            alerts = Alerts(Notifier(apprise_sender(notify_urls)), db_path, thresholds=limits)
        except BadNotifyURL as err:
            collector.stop()
            raise InputError(f"--notify: {err}") from None
        collector.listeners.append(alerts.start())
    if ha_prefix:
        from agent.logbook.homeassistant import HomeAssistant

        homeassistant = HomeAssistant(db_path, Topics(topic_prefix), ha_prefix)
        collector.listeners.append(homeassistant)
    collector.start()
    try:
        while not stop.wait(0.5) and not collector.failed.is_set():
            pass
    finally:
        collector.stop()
        if alerts:
            alerts.stop()
        if homeassistant:
            homeassistant.close()
    if collector.failed.is_set():
        raise RuntimeFailure("the logbook database failed; unacknowledged events stay queued at the broker")


@logbook.command("sessions")
@db_option
@click.option("--machine", metavar="ID", help="Only this machine.")
@click.option("--member", metavar="ID", help="Only this member.")
@since_until_options
@json_option
def sessions_command(db_path: Path, machine: str | None, member: str | None,
                     since: str | None, until: str | None, as_json: bool) -> None:
    """Sessions that overlap the period (all by default), oldest first; open ones have no end."""
    from agent.logbook.queries import sessions

    now = _now()
    rows = sessions(open_logbook(db_path), now, machine=machine, member=member,
                    since=_when("--since", since, now), until=_when("--until", until, now))
    if as_json:
        print_json(rows)
        return
    _table(["MACHINE", "MEMBER", "NAME", "BADGE", "START", "END", "H:MM", "ENDED"],
           [[r["machine"], r["member_id"], r["name"] or "", r["badge"], _local(r["start"]),
             _local(r["end"]) or "(open)", _hm(r["duration_s"]),
             f"{r['end_reason']} (estimated)" if r["end_estimated"] else r["end_reason"]] for r in rows])


@logbook.command()
@db_option
@since_until_options
@click.option("--thresholds", type=click.Path(dir_okay=False, path_type=Path),
              help="A TOML file of service intervals ([service_every] laser-1 = \"200h\").")
@json_option
def report(db_path: Path, since: str | None, until: str | None, thresholds: Path | None,
           as_json: bool) -> None:
    """Hours per machine and member, refusals by reason, busiest hours, inductions per trainer,
    out-of-order reports and bypass time per machine, service due."""
    from agent.logbook import maintenance, queries

    now = _now()
    limits = _thresholds(thresholds)
    db = open_logbook(db_path)
    result = queries.report(db, now, _local_tz(), since=_when("--since", since, now),
                            until=_when("--until", until, now))
    result["maintenance"] = maintenance.counters(db, now, limits)
    if as_json:
        print_json(result)
        return
    click.echo(f"Period: {_local(result['since']) or 'all time'} to {_local(result['until']) or 'now'}")
    click.echo(f"Hours of use: {result['hours']:.2f} h, {result['estimated_hours']:.2f} h of them estimated "
               "(sessions a crash or power cut ended at the agent's last heartbeat)")
    for title, key, group in (("Hours per machine", "machine", "machines"),
                              ("Hours per member", "member_id", "members")):
        click.echo(f"\n{title}:")
        _table([key.upper(), "HOURS", "SESSIONS"],
               [[u[key], f"{u['hours']:.2f}", u["sessions"]] for u in result[group]])
    click.echo("\nRefusals:")
    _table(["MACHINE", "REASON", "COUNT"], [[r["machine"], r["reason"], r["count"]] for r in result["refusals"]])
    click.echo("\nBusiest hours of the day (local time):")
    _table(["HOUR", "HOURS OF USE"], [[f"{b['hour']:02d}:00", f"{b['hours']:.2f}"] for b in result["busiest_hours"]])
    click.echo("\nInductions given at the machines, per trainer:")
    _table(["TRAINER", "INDUCTION", "COUNT"], [[i["trainer"], i["induction"], i["count"]] for i in result["inductions"]])
    click.echo("\nOut-of-order reports:")
    _table(["MACHINE", "REPORTS", "LAST"], [[o["machine"], o["count"], _local(o["last"])] for o in result["out_of_order"]])
    click.echo("\nBypass key (the machine powered around fabpass):")
    _table(["MACHINE", "HOURS", "TIMES"], [[b["machine"], f"{b['hours']:.2f}", b["times"]] for b in result["bypass"]])
    if result["gaps"]:
        click.echo("\nEvents the archive will never have (their machine no longer kept them):")
        _table(["MACHINE", "INCARNATION", "SEQ", "MISSING", "NOTED"],
               [[g["machine"], g["incarnation"] or "-", f"{g['first_seq']}-{g['last_seq']}", g["missing"],
                 _local(g["noted"])] for g in result["gaps"]])
    click.echo("\nMaintenance:")
    _table(["MACHINE", "HOURS SINCE SERVICE", "EVERY", "LAST SERVICE", ""],
           [[m["machine"], f"{m['hours_since_service']:.2f}", m["every_hours"] or "-",
             _local(m["last_service"]) or "never", "SERVICE DUE" if m["due"] else ""]
            for m in result["maintenance"]])


def _thresholds(path: Path | None) -> dict[str, float] | None:
    from agent.logbook.maintenance import ThresholdsError, load_thresholds

    if path is None:
        return None
    try:
        return load_thresholds(path)
    except ThresholdsError as err:
        raise InputError(f"--thresholds: {err}") from None


@logbook.command()
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True,
              help="CSV for a spreadsheet, or a JSON array.")
@since_until_options
def export(db_path: Path, fmt: str, since: str | None, until: str | None) -> None:
    """Sessions that started in the period, for billing (each session in exactly one period)."""
    from agent.logbook import queries

    now = _now()
    rows = queries.sessions(open_logbook(db_path), now, since=_when("--since", since, now),
                            until=_when("--until", until, now), by_start=True)
    # Not click.echo: off a terminal it strips what looks like an ANSI sequence, and an
    # export is data, to be written as it is (spreadsheet_cell makes the CSV safe).
    sys.stdout.write(queries.to_csv(rows) if fmt == "csv" else queries.to_json(rows))
    sys.stdout.flush()


@logbook.command()
@click.argument("machine")
@db_option
@click.option("--note", help="Record a service done now (or --at), e.g. \"tube replaced\".")
@click.option("--at", metavar="T", help="When the recorded service was done (default now).")
@click.option("--every", metavar="SPAN", help="Hours of use between services, e.g. 200h.")
@click.option("--thresholds", type=click.Path(dir_okay=False, path_type=Path),
              help="A TOML file of service intervals that overrides the stored ones.")
@json_option
def service(machine: str, db_path: Path, note: str | None, at: str | None, every: str | None,
            thresholds: Path | None, as_json: bool) -> None:
    """Record a service, set the interval, and show hours of use since the last service."""
    from agent.core.timespec import parse_duration
    from agent.logbook import maintenance

    now = _now()
    done_at = _when("--at", at, now)
    if every is not None:
        try:
            every_s = parse_duration(every)
        except ValueError as err:
            raise InputError(f"--every: {err}") from None
        if every_s <= 0:
            raise InputError("--every: must be more than zero")
    limits = _thresholds(thresholds)
    db = open_logbook(db_path)
    if note is not None or done_at is not None:
        maintenance.record_service(db, machine, done_at or now, note)
    if every is not None:
        maintenance.set_interval(db, machine, every_s)
    counter = next((c for c in maintenance.counters(db, now, limits) if c["machine"] == machine),
                   None)
    if counter is None:
        raise InputError(f"{machine}: no sessions, services or interval recorded for this machine")
    if as_json:
        print_json(counter)
        return
    from agent.cli.text import shown

    click.echo(shown(f"{machine}: {counter['hours_since_service']:.2f} h of use since "
                     f"{_local(counter['last_service']) or 'the first session (no service recorded)'}"
                     + (f", service every {counter['every_hours']} h" if counter["every_hours"] else "")
                     + (" — SERVICE DUE" if counter["due"] else "")))


@logbook.command()
@db_option
@click.option("--months", type=click.IntRange(min=1), required=True,
              help="Keep this many months; older events and sessions go.")
@click.option("--pseudonymise", is_flag=True,
              help="Replace member ids and badges by a keyed hash instead of deleting.")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The secret key for --pseudonymise; keep it away from the database.")
@json_option
def retention(db_path: Path, months: int, pseudonymise: bool, key_file: Path | None,
              as_json: bool) -> None:
    """Delete (or pseudonymise) events and sessions older than N months."""
    from agent.core.timespec import rfc3339
    from agent.logbook import privacy

    if pseudonymise and key_file is None:
        raise InputError("--pseudonymise needs --key-file (a secret kept apart from the database)")
    key = key_file.read_bytes().strip() if key_file else b""
    if pseudonymise and len(key) < 16:
        raise InputError(f"--key-file: {key_file} holds {len(key)} bytes; use at least 16 random bytes")
    db = open_logbook(db_path)
    cutoff = privacy.months_before(_now(), months)
    counts = (privacy.pseudonymise_older(db, cutoff, key) if pseudonymise
              else privacy.delete_older(db, cutoff))
    result = {"cutoff": cutoff.isoformat(), "action": "pseudonymised" if pseudonymise else "deleted", **counts}
    if as_json:
        print_json(result)
    else:
        click.echo(f"{result['action']} {counts['events']} events and {counts['sessions']} sessions "
                   f"from before {_local(rfc3339(cutoff))}")


@logbook.command("quarantine")
@db_option
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N.")
@json_option
def quarantine_command(db_path: Path, limit: int | None, as_json: bool) -> None:
    """Messages the collector could not archive (malformed, hostile, a seq taken), and why."""
    from agent.logbook.queries import quarantined

    rows = quarantined(open_logbook(db_path), limit)
    if as_json:
        print_json(rows)
        return
    _table(["RECEIVED", "TOPIC", "ERROR", "PAYLOAD"],
           [[_local(r["received"]), r["topic"], r["error"],
             r["payload"][:60] + ("…" if len(r["payload"]) > 60 else "")] for r in rows])


@logbook.command("member-export")
@click.argument("member_id")
@db_option
def member_export(member_id: str, db_path: Path) -> None:
    """One member's own data (sessions, refusals, events) as JSON, for a GDPR access request."""
    from agent.logbook.privacy import member_export as export_member

    print_json(export_member(open_logbook(db_path), member_id, _now()))


@logbook.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for the LAN; set --password-file then).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file holding the password the page asks for.")
def web(db_path: Path, host: str, port: int, password_file: Path | None) -> None:
    """A read-only web page: live fleet, latest sessions and refusals, hours per week."""
    from agent.logbook.web import serve

    password = password_file.read_text(encoding="utf-8").strip() if password_file else None
    if password_file and not password:
        raise InputError(f"--password-file: {password_file} is empty")
    open_logbook(db_path).close()
    serve(db_path, host, port, password, _local_tz())


@logbook.command()
@click.argument("machine")
@db_option
@click.option("--undo", is_flag=True, help="Bring a retired machine back.")
@click.option("--homeassistant", "ha_prefix", is_flag=False, flag_value="homeassistant", default=None,
              metavar="[PREFIX]", help="Also remove (or, with --undo, leave to the collector) its Home "
                                       "Assistant device under PREFIX (default homeassistant); needs --broker.")
@broker_option(required=False)
@password_file_option
def retire(machine: str, db_path: Path, undo: bool, ha_prefix: str | None, broker_url: str | None,
           password_file: str | None) -> None:
    """Take a machine out of service: no longer announced, listed in the fleet or reported offline.

    Its events stay in the archive. With --homeassistant and --broker, its
    Home Assistant device is removed at once.
    """
    from agent.logbook.retired import known_machines, restore
    from agent.logbook.retired import retire as retire_machine

    if ha_prefix and not broker_url:
        raise InputError("--homeassistant: give --broker too (the logbook's account clears the device)")
    db = open_logbook(db_path)
    with db:
        if machine not in known_machines(db):
            raise InputError(f"{machine}: the logbook has never seen this machine")
        if undo:
            if not restore(db, machine):
                raise InputError(f"{machine}: not retired")
            click.echo(f"{machine} is back in service; a running collector announces it when it next reports")
            return
        retire_machine(db, machine, _now())
    if ha_prefix:
        from agent.link.publish import PublishError, publish_acknowledged
        from agent.logbook.homeassistant import removal

        broker = parse_broker(broker_url, password_file)
        try:
            for topic in removal(machine, ha_prefix):
                publish_acknowledged(broker, topic, b"", retain=True)
        except PublishError as err:
            raise RuntimeFailure(f"{machine} is retired in the logbook, but its Home Assistant device "
                                 f"was not removed: {err}") from None
    click.echo(f"{machine} retired" + (f"; its Home Assistant device removed from {ha_prefix}/" if ha_prefix else ""))
