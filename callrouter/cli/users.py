"""`callrouter users add|list|revoke`: REST API users and their tokens."""
from __future__ import annotations

import asyncio

import click

from . import main
from .common import redact, settings_of


@main.group()
def users() -> None:
    """REST API users (tokens)."""


def _run(ctx: click.Context, work):
    from callrouter.store import Store

    settings = settings_of(ctx)

    async def go():
        async with Store(settings.database_url) as store:
            return await work(store)
    try:
        return asyncio.run(go())
    except click.ClickException:
        raise
    except Exception as e:  # the URL's password must not leak
        raise click.ClickException(f"{type(e).__name__}: {redact(str(e), settings)}") from None


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["manager", "supervisor", "admin"]), required=True,
              help="manager: own calls and clients only; supervisor: everything, writes clients; "
                   "admin: also managers.")
@click.option("--extension", default=None, help="The manager's extension (required for --role manager).")
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str, extension: str | None) -> None:
    """Create a user and print their token (shown this once; only its hash is stored)."""
    from callrouter.store.users import UserExists
    from callrouter.web.tokens import new_token

    if role == "manager" and not extension:
        raise click.UsageError("--extension is required for a manager (their calls and clients are theirs)")
    if role != "manager" and extension:
        raise click.UsageError("--extension is for managers only")
    token = new_token()

    async def work(store):
        try:
            return await store.add_user(name, role, extension, token.token_id, token.token_hash)
        except UserExists as e:
            raise click.ClickException(str(e)) from None
    _run(ctx, work)
    click.echo(f"user {name} ({role}{', extension ' + extension if extension else ''}) created; token "
               "(shown once, keep it secret):", err=True)
    click.echo(token.token)


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """Every user: name, role, extension, created, revoked."""
    rows = _run(ctx, lambda store: store.list_users())
    for u in rows:
        state = f"revoked {u.revoked_at:%Y-%m-%d %H:%M}" if u.revoked_at else "active"
        created = f"{u.created_at:%Y-%m-%d %H:%M}" if u.created_at else "-"
        click.echo(f"{u.name}\t{u.role}\t{u.extension or '-'}\t{created}\t{state}")


@users.command("revoke")
@click.argument("name")
@click.pass_context
def users_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a user's token at once (the daemon checks it on every request)."""
    if not _run(ctx, lambda store: store.revoke_user(name)):
        raise click.ClickException(f"no active user {name!r}")
    click.echo(f"user {name} revoked")
