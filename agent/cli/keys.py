"""`fabpass keys`: the lab admin's Ed25519 key pair for signed member lists and commands."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.options import InputError


@click.group()
def keys() -> None:
    """Signing keys for member snapshots and technicians' commands."""


@keys.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def generate(directory: Path) -> None:
    """Create DIRECTORY/signing.key (private, mode 0600) and DIRECTORY/signing.pub.

    Keep signing.key on the admin's computer only. Put the one line of
    signing.pub in each machine's config as `public_key` under [members].
    Prints the paths of the two files; never overwrites an existing key.
    """
    from agent.signing import KeyFileError, generate_keys

    try:
        key_path, pub_path = generate_keys(directory)
    except KeyFileError as err:
        raise InputError(str(err)) from None
    click.echo(key_path)
    click.echo(pub_path)
