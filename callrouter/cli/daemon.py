"""`callrouter run`: the daemon."""
from __future__ import annotations

import logging

import click

from . import main
from .common import settings_of


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon: FastAGI routing, AMI events in, call records to the store.
    Stops cleanly on SIGTERM/SIGINT; SIGHUP reloads the rules and DND."""
    from callrouter.daemon import run_daemon
    from callrouter.store import SchemaNotCurrent

    settings = settings_of(ctx)
    logging.getLogger().setLevel("DEBUG" if ctx.find_root().obj.get("verbose") else settings.log_level)
    try:
        run_daemon(settings)
    except* SchemaNotCurrent as eg:
        raise click.ClickException(str(eg.exceptions[0])) from None
