"""``whales db``: move the database schema between Alembic revisions.

The database is WHALES_DATABASE_URL, or the embedded server when that is unset
(the same one the API and workers would use).
"""

from __future__ import annotations

import click
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import make_url

from shared.db import migrate


def _database_url() -> str:
    from shared.services import resolve_database_url

    return resolve_database_url()


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _head(url: str) -> str | None:
    return ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()


def _report_revision(url: str) -> None:
    revision = migrate.current_revision(url)
    if revision is None:
        state = "none (no schema)"
    elif revision == _head(url):
        state = f"{revision} (head)"
    else:
        state = f"{revision} (head is {_head(url)})"
    click.echo(f"{_shown(url)}: {state}")


@click.group()
def db() -> None:
    """Database schema: upgrade, downgrade, current."""


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    url = _database_url()
    try:
        migrate.upgrade(url, revision)
    except CommandError as error:
        raise click.ClickException(str(error)) from error
    _report_revision(url)


@db.command()
@click.argument("revision", default="-1")
def downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION: -1 (default) undoes the last
    migration, 'base' removes the whole schema and every row in it."""
    url = _database_url()
    try:
        migrate.downgrade(url, revision)
    except CommandError as error:
        raise click.ClickException(str(error)) from error
    _report_revision(url)


@db.command()
def current() -> None:
    """Show the database's revision and whether it is the head."""
    _report_revision(_database_url())
