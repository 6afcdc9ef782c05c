"""`callrouter import clients|managers FILE.csv`: the CRM's data into the store.

The good rows are written (the running daemons see them within a second through the
client change feed), each bad row is reported (row, field, reason) in a CSV report next
to the input (`--errors` to put it elsewhere), a summary line ends the run; a progress
bar on stderr when it is a terminal. Exit status 0 when every row was good, 1 when some
were not imported (or the file could not be read at all).
"""
from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path
from typing import Any

import click

from . import main
from .common import config_option, redact, settings_of


@main.group("import")
def import_group() -> None:
    """Import clients or managers from CSV files (format: README, "Import")."""


def _options(fn: Any) -> Any:
    fn = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))(fn)
    fn = click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="Where to write the bad rows (default: FILE's name + .errors.csv, next to it).")(fn)
    fn = click.option("--dry-run", is_flag=True, help="Read and check every row; write nothing to the store.")(fn)
    fn = click.option("--encoding", default="utf-8", show_default=True,
                      help="The file's encoding, e.g. cp1251 for an old Excel 'CSV' file.")(fn)
    return config_option(fn)


@import_group.command("clients")
@_options
@click.option("--region", default=None, help="Region phones without a country code are read in "
                                             "(default: the config's default_region).")
@click.pass_context
def import_clients_cmd(ctx: click.Context, file: Path, errors_path: Path | None, dry_run: bool, encoding: str,
                       config: str | None, region: str | None) -> None:
    """Clients: id,name,phones,owner_extension,monthly_turnover,tier,problem,blocked."""
    settings = settings_of(ctx, config)

    async def work(store: Any, source: Any, on_error: Any, on_progress: Any) -> Any:
        from callrouter.crm.importer import import_clients, known_extensions

        owners = await known_extensions(store) | {m.extension for m in settings.managers}
        return await import_clients(store, source, region=(region or settings.default_region).upper(),
                                    known_owners=owners, on_error=on_error, encoding=encoding,
                                    dry_run=dry_run, on_progress=on_progress)

    _run(settings, file, errors_path, encoding, work)


@import_group.command("managers")
@_options
@click.pass_context
def import_managers_cmd(ctx: click.Context, file: Path, errors_path: Path | None, dry_run: bool, encoding: str,
                        config: str | None) -> None:
    """Managers: extension,name,devices (a manager's devices replace those it had)."""
    settings = settings_of(ctx, config)

    async def work(store: Any, source: Any, on_error: Any, on_progress: Any) -> Any:
        from callrouter.crm.importer import import_managers

        return await import_managers(store, source, on_error=on_error, encoding=encoding, dry_run=dry_run,
                                     on_progress=on_progress)

    _run(settings, file, errors_path, encoding, work)


def _run(settings: Any, file: Path, errors_path: Path | None, encoding: str, work: Any) -> None:
    import codecs

    from callrouter.crm.csvimport import CsvFormatError
    from callrouter.store import Store

    report = errors_path or file.with_name(file.name.removesuffix(".csv") + ".errors.csv")
    size = file.stat().st_size

    async def main_() -> Any:
        # utf-8-sig: a spreadsheet opening the report reads its Cyrillic right
        with open(file, "rb") as source, open(report, "w", encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["row", "field", "reason"])

            def on_error(e: Any) -> None:
                writer.writerow([e.row, e.field or "", e.reason])

            bar = click.progressbar(length=size, label=f"importing {file.name}", file=sys.stderr,
                                    show_pos=False) if sys.stderr.isatty() else None
            done = 0

            def on_progress(_rows: int) -> None:
                nonlocal done
                if bar is not None:
                    pos = source.tell()
                    bar.update(pos - done)
                    done = pos

            async with Store(settings.database_url) as store:
                try:
                    if bar is None:
                        return await work(store, source, on_error, on_progress)
                    with bar:
                        return await work(store, source, on_error, on_progress)
                finally:
                    out.flush()

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {encoding!r}", param_hint="--encoding") from None
    try:
        summary = asyncio.run(main_())
    except CsvFormatError as e:
        raise click.ClickException(f"{file}: {e}") from None
    except click.ClickException:
        raise
    except Exception as e:  # the URL's password must not leak: the error type and text only
        raise click.ClickException(f"import failed: {type(e).__name__}: {redact(str(e), settings)}") from None
    click.echo(summary.line())
    if summary.bad_rows:
        click.echo(f"bad rows (row, field, reason): {report}")
        sys.exit(1)
