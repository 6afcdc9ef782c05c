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
    from callrouter.daemon import StartupError, run_daemon
    from callrouter.store import SchemaNotCurrent

    settings = settings_of(ctx)
    root = ctx.find_root().obj
    logging.getLogger().setLevel("DEBUG" if root.get("verbose") else settings.log_level)
    try:
        run_daemon(settings)
    except Exception as e:
        known = _first(e, (StartupError, SchemaNotCurrent))
        if known is None or root.get("debug"):
            raise
        raise click.ClickException(f"cannot start: {known}") from None


def _first(e: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `kinds` in `e`, looking inside exception groups."""
    if isinstance(e, kinds):
        return e
    if isinstance(e, BaseExceptionGroup):
        for sub in e.exceptions:
            found = _first(sub, kinds)
            if found is not None:
                return found
    return None
