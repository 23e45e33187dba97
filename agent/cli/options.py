"""Options and errors shared by the commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class _Failure(click.ClickException):
    def format_message(self) -> str:
        """The message with control characters escaped: it may quote a list, a source or an event."""
        from agent.cli.text import shown

        return shown(self.message)


class InputError(_Failure):
    """Bad usage or invalid input: exit 2 with one message naming what is wrong."""

    exit_code = 2


class RuntimeFailure(_Failure):
    exit_code = 1


def config_option(f: F) -> F:
    return click.option(
        "--config", "config_path", required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The machine's config file (TOML).",
    )(f)


def broker_option(required: bool = True) -> Callable[[F], F]:
    return click.option(
        "--broker", "broker_url", required=required, metavar="URL",
        help="mqtt://[user@]host[:port] or mqtts://…; the password comes from "
        "--password-file or FABPASS_MQTT_PASSWORD.",
    )


def password_file_option(f: F) -> F:
    return click.option(
        "--password-file", type=click.Path(exists=True, dir_okay=False), default=None,
        help="A file holding the broker password.",
    )(f)


def prefix_option(f: F) -> F:
    from agent.link.topics import DEFAULT_PREFIX

    return click.option("--prefix", "topic_prefix", default=DEFAULT_PREFIX, show_default=True,
                        help="The MQTT topic prefix.")(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def db_option(f: F) -> F:
    return click.option("--db", "db_path", required=True, envvar="FABPASS_LOGBOOK_DB",
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="The logbook database (SQLite); or FABPASS_LOGBOOK_DB.")(f)


def open_logbook(path: Path):
    """The logbook at `path`; a missing one is bad usage (exit 2), naming it."""
    from agent.logbook.store import LogbookMissing, open_db

    try:
        return open_db(path)
    except LogbookMissing as err:
        raise InputError(str(err)) from None


def load_config(path: Path, simulate: bool = False):
    from agent.config import ConfigError, load

    try:
        return load(path, simulate=simulate)
    except ConfigError as err:
        raise InputError(str(err)) from None


def parse_broker(url: str, password_file: str | None = None):
    from agent.link.broker import BadBrokerURL, Broker

    try:
        broker = Broker.parse(url)
    except BadBrokerURL as err:
        raise InputError(f"--broker: {err}") from None
    try:
        return broker.with_credentials(password_file=password_file)
    except OSError as err:
        raise InputError(f"--password-file: {err}") from None


def who(by: str | None) -> str:
    """`--by`, or the user running the command; a clear error where the system cannot say
    who that is (no USER or LOGNAME, a uid with no account: a container, a DynamicUser unit)."""
    if by:
        return by
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise InputError("--by: say who you are (this system cannot tell the user's name)") from None


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()
