"""`fabpass cards provision`: give a secure card (NTAG 424 DNA) its key for this lab."""

from __future__ import annotations

import time
from pathlib import Path

import click

from agent.cli.options import InputError, RuntimeFailure, config_option, load_config

POLL = 0.1  # seconds between two looks for a card on the reader


@click.group()
def cards() -> None:
    """Secure cards (NTAG 424 DNA): each with its own key, diversified from the lab's master key."""


@cards.command()
@config_option
@click.option("--key0", metavar="HEX", default=None,
              help="The card's key 0, 32 hex digits (default: the factory's, all zero).")
@click.option("--old-key", metavar="HEX", default=None,
              help="The card's key card_key_no as it is now, 32 hex digits (default: all zero).")
@click.option("--old-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Rotating the master key: the old master key's file; the card's key is its diversification.")
@click.option("--wait", "wait_for", metavar="DURATION", default="30s", show_default=True,
              help="How long to wait for a card on the reader.")
def provision(config_path: Path, key0: str | None, old_key: str | None, old_key_file: Path | None,
              wait_for: str) -> None:
    """Provision the next card laid on this machine's reader, with its agent stopped.

    The card is authenticated with its key 0, and its key card_key_no ([reader])
    is changed from its old key to the lab's master key (card_key_file)
    diversified with the card's UID; a secure tap then checks it. A card that
    already holds that key is left as it is. Key 0 is not changed. Prints the
    card's UID, the badge to put in the member list. Exit 0 when the card is
    provisioned, 1 when it could not be (the reason is printed), 2 for bad options
    or an unusable key file.
    """
    from agent.core.timespec import parse_duration
    from agent.hardware.cardkeys import CardKeyError, load_master_key, parse_key
    from agent.hardware.factory import CardPortUnavailable, open_card_port
    from agent.hardware.provision import FACTORY_KEY, ProvisionError
    from agent.hardware.provision import provision as provision_card

    config = load_config(config_path)
    reader = config.reader
    if reader.secure is None or reader.card_key_file is None:
        raise InputError(f'{config_path}: reader.secure: set it to "ntag424", with card_key_file, to provision cards')
    if old_key is not None and old_key_file is not None:
        raise InputError("give --old-key or --old-key-file, not both")
    try:
        wait = parse_duration(wait_for)
    except ValueError as err:
        raise InputError(f"--wait: {err}") from None
    try:
        master = load_master_key(reader.card_key_file)
    except CardKeyError as err:
        raise InputError(f"{config_path}: reader.card_key_file: {err}") from None
    try:
        first = parse_key(key0, "--key0") if key0 is not None else FACTORY_KEY
        old = parse_key(old_key, "--old-key") if old_key is not None else None
        old_master = load_master_key(old_key_file) if old_key_file is not None else None
    except CardKeyError as err:
        raise InputError(str(err)) from None
    _agent_stopped(config, config_path)
    try:
        port = open_card_port(reader)
    except CardPortUnavailable as err:
        raise RuntimeFailure(str(err)) from None
    try:
        click.echo(f"lay a card on the reader of {config.machine.id}…", err=True)
        uid, sak = _next_card(port, wait)
        try:
            done = provision_card(port, uid, sak, master, reader.card_key_no, first, old, old_master)
        except ProvisionError as err:
            raise RuntimeFailure(f"{uid.hex().upper()}: not provisioned: {err}") from None
    finally:
        port.close()
    click.echo(done.uid.hex().upper())
    click.echo(f"key {reader.card_key_no} " + ("already held this lab's key" if done.already
                                               else "now holds this lab's key") + "; a secure tap passes", err=True)


def _agent_stopped(config, config_path: Path) -> None:
    """The running agent holds the reader: provisioning waits until it is stopped."""
    from agent.daemon.control import ControlError, NotRunning, request

    try:
        request(config.storage.dir, {"op": "status"}, timeout=2)
    except (NotRunning, ControlError, OSError):
        return
    raise RuntimeFailure(f"the agent running with {config_path} holds the reader: stop it first "
                         "(sudo systemctl stop fabpass)")


def _next_card(port, wait: float) -> tuple[bytes, int]:
    deadline = time.monotonic() + wait
    while True:
        found = port.select_card()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise RuntimeFailure(f"no card on the reader within {wait:g} s")
        time.sleep(POLL)
