"""The `callrouter` command: every subcommand lives in this package, one module a room
(calllog: replay; crm: import; daemon: run; db: upgrade; deadletters: list; routing: rules, route;
users: API tokens)."""
from __future__ import annotations

import logging
import sys

import click


class _Main(click.Group):
    """Every failure of every command is one line on stderr and exit code 1 (a ClickException);
    the traceback only with --debug. Secrets of the loaded config are masked in that line."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.UsageError):
            raise
        except click.ClickException as e:
            e.message = _one_line(e.message, ctx)
            raise
        except Exception as e:
            if isinstance(ctx.obj, dict) and ctx.obj.get("debug"):
                raise
            raise click.ClickException(_one_line(f"{type(e).__name__}: {e} (--debug shows where)", ctx)) from None


def _one_line(text: str, ctx: click.Context) -> str:
    from .common import mask_secrets
    text = " ".join(text.split())
    settings = ctx.obj.get("settings") if isinstance(ctx.obj, dict) else None
    return mask_secrets(text, settings)


@click.group(cls=_Main)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: ./callrouter.toml when present).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.option("--debug", is_flag=True, help="On a failure, print the traceback too (secrets may be in it).")
@click.version_option(package_name="callrouter")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: bool, debug: bool) -> None:
    """Routes inbound Asterisk calls to the right manager and logs every call."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["verbose"] = verbose
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# each registers its commands on `main`
from . import calllog, crm, daemon, db, deadletters, demo, routing, users  # noqa: E402

__all__ = ["calllog", "crm", "daemon", "db", "deadletters", "demo", "main", "routing", "users"]
