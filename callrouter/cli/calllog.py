"""`callrouter replay CAPTURE`: a captured AMI stream through the call log, records out."""
from __future__ import annotations

import logging
import sys

import click

from . import main
from .common import settings_of

log = logging.getLogger("callrouter")


@main.command()
@click.argument("capture", type=click.Path(exists=True, dir_okay=False))
@click.option("--pbx", default=None, help="PBX name to put in the records (default: the first configured).")
@click.pass_context
def replay(ctx: click.Context, capture: str, pbx: str | None) -> None:
    """Feed a captured AMI stream through the tracker; print call records as JSON lines.

    CAPTURE is JSONL raw frames ({"t":..,"raw":"Event: ..."}) or a JSON array of events.
    Works without a config file: devices then map to agents by channel name."""
    from callrouter.ami.capture import CaptureError, read_events
    from callrouter.calllog.walk import CallLog, replay as walk
    from callrouter.devices import DeviceMap
    from callrouter.tracker import CallFinished, Tracker

    settings = settings_of(ctx)
    calllog = CallLog(Tracker(pbx or settings.pbx[0].name, DeviceMap(settings.managers), settings.default_region))
    bad = 0

    def on_error(msg: str) -> None:
        nonlocal bad
        bad += 1
        log.warning("%s: skipped: %s", capture, msg)

    out = sys.stdout
    try:
        for fact in walk(read_events(capture, on_error), calllog):
            if isinstance(fact, CallFinished):
                out.write(fact.record.to_json() + "\n")
    except CaptureError as e:
        raise click.ClickException(str(e)) from None
    if bad:
        click.echo(f"{bad} frame(s) skipped, see warnings above", err=True)
