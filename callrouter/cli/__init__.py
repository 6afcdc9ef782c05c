"""The `callrouter` command: every subcommand lives in this package, one module a room
(calllog: replay; crm: import; daemon: run; db: upgrade; deadletters: list; routing: rules, route;
users: API tokens)."""
from __future__ import annotations

import logging
import sys

import click


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
    ctx.obj["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# each registers its commands on `main`
from . import calllog, crm, daemon, db, deadletters, demo, routing, users  # noqa: E402

__all__ = ["calllog", "crm", "daemon", "db", "deadletters", "demo", "main", "routing", "users"]
