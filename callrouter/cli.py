"""The `callrouter` command."""
from __future__ import annotations

import logging
import sys

import click

from callrouter.config import ConfigError, Settings, load_settings
from callrouter.devices import DeviceMap

log = logging.getLogger("callrouter")


def _settings(ctx: click.Context) -> Settings:
    """Settings from --config (required to exist only when given explicitly)."""
    obj = ctx.find_root().obj
    if obj.get("settings") is None:
        try:
            obj["settings"] = load_settings(obj["config"])
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
    return obj["settings"]


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: ./callrouter.toml when present).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.version_option(package_name="callrouter")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """Routes inbound Asterisk calls to the right manager and logs every call."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("capture", type=click.Path(exists=True, dir_okay=False))
@click.option("--pbx", default=None, help="PBX name to put in the records (default: the first configured).")
@click.pass_context
def replay(ctx: click.Context, capture: str, pbx: str | None) -> None:
    """Feed a captured AMI stream through the tracker; print call records as JSON lines.

    CAPTURE is JSONL raw frames ({"t":..,"raw":"Event: ..."}) or a JSON array of events.
    Works without a config file: devices then map to extensions by channel name."""
    from callrouter.ami.capture import CaptureError, read_events
    from callrouter.tracker import CallFinished, Tracker

    settings = _settings(ctx)
    tracker = Tracker(pbx or settings.pbx[0].name, DeviceMap(settings.managers), settings.default_region)
    bad = 0

    def on_error(msg: str) -> None:
        nonlocal bad
        bad += 1
        log.warning("%s: skipped: %s", capture, msg)

    out = sys.stdout
    try:
        for event in read_events(capture, on_error):
            for fact in tracker.feed(event):
                if isinstance(fact, CallFinished):
                    out.write(fact.record.to_json() + "\n")
    except CaptureError as e:
        raise click.ClickException(str(e)) from None
    for fact in tracker.close("capture ended with the call in progress"):
        if isinstance(fact, CallFinished):
            out.write(fact.record.to_json() + "\n")
    if bad:
        click.echo(f"{bad} frame(s) skipped, see warnings above", err=True)


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon: AMI events in, call records to the store. Stops cleanly on SIGTERM/SIGINT."""
    from callrouter.daemon import run as run_daemon
    from callrouter.store import SchemaNotCurrent

    settings = _settings(ctx)
    logging.getLogger().setLevel(settings.log_level if not ctx.find_root().params.get("verbose") else "DEBUG")
    try:
        run_daemon(settings)
    except* SchemaNotCurrent as eg:
        raise click.ClickException(str(eg.exceptions[0])) from None


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the store's schema to the current version (Alembic)."""
    import asyncio

    from callrouter.store import upgrade

    settings = _settings(ctx)
    try:
        asyncio.run(upgrade(settings.database_url))
    except Exception as e:  # the URL's password must not leak: show the error type and text only
        raise click.ClickException(f"db upgrade failed: {type(e).__name__}: {_redact(str(e), settings)}") from None
    click.echo("database schema is current")


def _redact(text: str, settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(settings.database_url)
        if url.password:
            text = text.replace(str(url.password), "***")
    except Exception:
        pass
    return text


def _add_routing_commands() -> None:
    from callrouter.routing.cli import route, rules

    main.add_command(rules)
    main.add_command(route)


_add_routing_commands()

if __name__ == "__main__":
    main()
