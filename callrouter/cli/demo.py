"""`callrouter demo`: see it work in one command (callrouter.demo)."""
from __future__ import annotations

import click

from . import main


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where the demo's SQLite store and spool live (default: a new temporary directory).")
@click.option("--web-port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="The REST API's port on 127.0.0.1 (0: any free port).")
@click.option("--rate", default=2.0, show_default=True, type=click.FloatRange(0.1, 50.0),
              help="Calls started per second.")
@click.option("--clients", "n_clients", default=3000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Sample clients to seed.")
def demo(directory: str | None, web_port: int, rate: float, n_clients: int) -> None:
    """Run the daemon against a built-in PBX simulator: recorded Asterisk calls replayed over
    real AMI and FastAGI, sample managers and clients, demo tokens. Ctrl-C stops it."""
    import asyncio
    import signal
    import tempfile
    from pathlib import Path

    from callrouter.demo.run import run_demo

    where = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="callrouter-demo-"))

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_demo(where, stop, web_port=web_port, rate=rate, n_clients=n_clients,
                       say=lambda line: click.echo(line))
        click.echo("callrouter demo: stopped")

    asyncio.run(go())
