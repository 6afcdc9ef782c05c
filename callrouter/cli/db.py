"""`callrouter db upgrade`: the store's schema (Alembic)."""
from __future__ import annotations

import click

from . import main
from .common import redact, settings_of


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the store's schema to the current version (Alembic)."""
    import asyncio

    from callrouter.store import upgrade

    settings = settings_of(ctx)
    try:
        asyncio.run(upgrade(settings.database_url))
    except Exception as e:  # the URL's password must not leak: show the error type and text only
        raise click.ClickException(f"db upgrade failed: {type(e).__name__}: {redact(str(e), settings)}") from None
    click.echo("database schema is current")
