"""`callrouter deadletters list`: what the database refused twice (callrouter.store.writer
splits a refused batch; an item refused alone is kept in `dead_letters` with the error)."""
from __future__ import annotations

import click

from . import main
from .common import redact, settings_of


@main.group()
def deadletters() -> None:
    """Records and decisions the database refused; calls the webhook receiver refused."""


@deadletters.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Newest N.")
@click.option("--kind", type=click.Choice(["record", "decision", "webhook"]), default=None, help="Only this kind.")
@click.option("--payload/--no-payload", default=False, help="Also print each item as stored (JSON).")
@click.pass_context
def deadletters_list(ctx: click.Context, limit: int, kind: str | None, payload: bool) -> None:
    """The newest dead letters: when, kind, key (pbx/call_id or pbx/uniqueid@time) and
    the database's error; one per line, tab-separated."""
    import asyncio

    from callrouter.store import Store

    settings = settings_of(ctx)

    async def fetch():
        async with Store(settings.database_url) as store:
            return await store.dead_letters(limit, kind)

    try:
        letters = asyncio.run(fetch())
    except Exception as e:  # noqa: BLE001 - one line, and never the URL's password
        raise click.ClickException(f"cannot read dead letters: {type(e).__name__}: {redact(str(e), settings)}") \
            from None
    for d in letters:
        when = d.created_at.isoformat() if d.created_at else "?"
        click.echo(f"{when}\t{d.kind}\t{d.key}\t{d.error}")
        if payload:
            click.echo(f"\t{d.payload}")
    if not letters:
        click.echo("no dead letters", err=True)
