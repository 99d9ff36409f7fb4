"""``flask tokens add|list|revoke``: the named tokens of ``AGENT_API_TOKENS_FILE``."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask import current_app
from filelock import Timeout
from flask.cli import AppGroup

from app.access.roles import ROLES
from app.access.token_file import TokenFileEditor
from app.shared_settings import ConfigError

tokens_cli = AppGroup("tokens", help="Manage the named tokens of AGENT_API_TOKENS_FILE.")


@contextmanager
def _file_errors() -> Iterator[None]:
    """A file that cannot be read, locked or changed ends the command with one line."""
    try:
        yield
    except (ConfigError, OSError, Timeout) as exc:
        raise click.ClickException(str(exc)) from exc


def _editor() -> TokenFileEditor:
    path = current_app.config.get("AGENT_API_TOKENS_FILE")
    if not path:
        raise click.ClickException("AGENT_API_TOKENS_FILE is not set: name the file that "
                                   "keeps the tokens' hashes.")
    return TokenFileEditor(path)


@tokens_cli.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="read: GET everything; run: claim and report as its runners; "
                   "submit: create, decide, cancel, rerun, read; admin: everything.")
def add_token(name: str, role: str) -> None:
    """Add a token NAME and print its secret, once: only its hash is kept."""
    with _file_errors():
        secret = _editor().add(name, role)
    click.echo(secret)
    click.echo(f"token {name!r} ({role}) added; the secret above is shown only now",
               err=True)


@tokens_cli.command("list")
def list_tokens() -> None:
    """The tokens' names and roles."""
    with _file_errors():
        found = _editor().tokens()
    for token in found:
        click.echo(f"{token.name}\t{token.role}")


@tokens_cli.command("revoke")
@click.argument("name")
def revoke_token(name: str) -> None:
    """Remove the token NAME: servers refuse it once they see the file change."""
    with _file_errors():
        revoked = _editor().revoke(name)
    if not revoked:
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"token {name!r} revoked")
