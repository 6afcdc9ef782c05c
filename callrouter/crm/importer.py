"""A CSV import into the store: the parser's good rows written in chunks, its errors handed
to the caller as they come. Used by `callrouter import`; the running daemons see the
result through the client change feed (`callrouter.store.changes`), whoever imports.

Writes go straight to the store with `Store.upsert_client_records`, which leaves unchanged
clients alone: importing the same file twice changes nothing (no `updated_at` bump, no
change-feed rows, so no daemon work either).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import select

from callrouter.config import ManagerConfig
from callrouter.crm.csvimport import RowError, read_client_records, read_managers
from callrouter.crm.models import ManagerIn
from callrouter.store.clients import UPSERT_CHUNK
from callrouter.store.schema import Manager

OnError = Callable[[RowError], Any]
OnProgress = Callable[[int], Any]   # rows read so far


@dataclass(frozen=True, slots=True)
class ImportSummary:
    kind: str          # "clients" | "managers"
    good: int          # rows valid (written, or would be with dry_run)
    bad_rows: int      # rows not imported
    errors: int        # problems reported (a bad row may have several)
    dry_run: bool
    seconds: float

    def line(self) -> str:
        verb = "would be imported (dry run: nothing written)" if self.dry_run else "imported"
        return (f"{self.kind}: {self.good:,} rows {verb}, {self.bad_rows:,} rows with errors "
                f"({self.errors:,} problems), {self.seconds:.1f} s")


async def known_extensions(store: Any) -> set[str]:
    """Every manager extension in the store: the owners a client may have."""
    async with store.engine.connect() as conn:
        return set((await conn.scalars(select(Manager.__table__.c.extension))).all())


def _chunks(items: Iterable[Any], size: int, counts: dict[str, int], on_error: OnError,
            on_progress: OnProgress | None) -> Iterator[list[Any]]:
    """Good items in lists of `size`; errors go to `on_error` as they come."""
    last_bad = None
    chunk: list[Any] = []
    for item in items:
        if isinstance(item, RowError):
            counts["errors"] += 1
            if item.row != last_bad:
                counts["bad_rows"] += 1
                last_bad = item.row
            on_error(item)
            continue
        chunk.append(item)
        if len(chunk) >= size:
            counts["good"] += len(chunk)
            if on_progress is not None:
                on_progress(counts["good"] + counts["bad_rows"])
            yield chunk
            chunk = []
    counts["good"] += len(chunk)
    if on_progress is not None:
        on_progress(counts["good"] + counts["bad_rows"])
    if chunk:
        yield chunk


async def import_clients(store: Any, source: IO[bytes] | bytes, *, region: str, known_owners: set[str],
                         on_error: OnError, encoding: str = "utf-8", dry_run: bool = False,
                         on_progress: OnProgress | None = None, chunk_size: int = UPSERT_CHUNK) -> ImportSummary:
    t0 = time.perf_counter()
    counts = {"good": 0, "bad_rows": 0, "errors": 0}
    rows = read_client_records(source, region=region, known_owners=known_owners, encoding=encoding)
    chunks = _chunks(rows, chunk_size, counts, on_error, on_progress)

    def parse_next() -> list[Any] | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        return [] if dry_run else chunk

    pending: asyncio.Task | None = None
    try:
        while True:
            # The next chunk is parsed in a thread while the last one is written: the
            # event loop stays free to drive the database, which works in its own process
            # (PostgreSQL) or thread (SQLite). One write in flight, in file order.
            clients = await asyncio.to_thread(parse_next)
            if pending is not None:
                await pending
                pending = None
            if clients is None:
                break
            if clients:
                pending = asyncio.create_task(store.upsert_client_records(clients))
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
    return ImportSummary("clients", counts["good"], counts["bad_rows"], counts["errors"], dry_run,
                         time.perf_counter() - t0)


def _manager_config(m: ManagerIn) -> ManagerConfig:
    return ManagerConfig(extension=m.extension, name=m.name, devices=m.devices)


async def import_managers(store: Any, source: IO[bytes] | bytes, *, on_error: OnError, encoding: str = "utf-8",
                          dry_run: bool = False, on_progress: OnProgress | None = None) -> ImportSummary:
    t0 = time.perf_counter()
    counts = {"good": 0, "bad_rows": 0, "errors": 0}
    for chunk in _chunks(read_managers(source, encoding=encoding), 1000, counts, on_error, on_progress):
        if not dry_run:
            await store.upsert_managers([_manager_config(m) for m in chunk])
    return ImportSummary("managers", counts["good"], counts["bad_rows"], counts["errors"], dry_run,
                         time.perf_counter() - t0)
