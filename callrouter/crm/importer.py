"""A CSV import into the store: the parser's good rows written in chunks, its errors handed
to the caller as they come. Used by `callrouter import`; the running daemons see the
result through the client change feed (`callrouter.store.changes`), whoever imports.

Writes go straight to the store with `Store.upsert_client_records`, which leaves unchanged
clients alone: importing the same file twice changes nothing (no `updated_at` bump, no
change-feed rows, so no daemon work either).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import select

from callrouter.config import ManagerConfig
from callrouter.crm.csvimport import RowError, read_client_records, read_managers
from callrouter.crm.models import ManagerIn
from callrouter.crm.parseproc import ParsedInChild
from callrouter.store.clients import UPSERT_CHUNK
from callrouter.store.schema import Manager

OnError = Callable[[RowError], Any]
OnProgress = Callable[[int, int], Any]   # rows read so far, bytes of the file read so far


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
            on_progress: OnProgress | None, position: Callable[[], int]) -> Iterator[list[Any]]:
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
                on_progress(counts["good"] + counts["bad_rows"], position())
            yield chunk
            chunk = []
    counts["good"] += len(chunk)
    if on_progress is not None:
        on_progress(counts["good"] + counts["bad_rows"], position())
    if chunk:
        yield chunk


def _position(source: IO[bytes] | bytes) -> Callable[[], int]:
    tell = getattr(source, "tell", None)
    return tell if tell is not None else (lambda: 0)


# a file at least this big is parsed in a child process (callrouter.crm.parseproc):
# below it, the child's start (about a second) costs more than it saves
CHILD_FROM_BYTES = 4_000_000


def _file_on_disk(source: IO[bytes] | bytes) -> str | None:
    """The path of a regular file `source` was opened from, if it has one."""
    name = getattr(source, "name", None)
    if not isinstance(name, str) or not os.path.isfile(name):
        return None
    return name


async def import_clients(store: Any, source: IO[bytes] | bytes, *, region: str, known_owners: set[str],
                         on_error: OnError, encoding: str = "utf-8", dry_run: bool = False,
                         on_progress: OnProgress | None = None, chunk_size: int = UPSERT_CHUNK,
                         in_child: bool | None = None) -> ImportSummary:
    """`in_child`: parse in a child process (None: when `source` is a file on disk of at
    least CHILD_FROM_BYTES; it is then read by its path, from its start)."""
    t0 = time.perf_counter()
    counts = {"good": 0, "bad_rows": 0, "errors": 0}
    path = _file_on_disk(source)
    if in_child is None:
        in_child = path is not None and os.path.getsize(path) >= CHILD_FROM_BYTES
    if in_child and path is None:
        raise ValueError("parsing in a child process needs a file on disk")
    with contextlib.ExitStack() as stack:
        if in_child:
            child = stack.enter_context(ParsedInChild(path, region=region, known_owners=known_owners,
                                                      encoding=encoding, batch=chunk_size))
            rows: Iterable[Any] = child
            position: Callable[[], int] = lambda: child.position  # noqa: E731
        else:
            rows = read_client_records(source, region=region, known_owners=known_owners, encoding=encoding)
            position = _position(source)
        await _write_chunks(store, _chunks(rows, chunk_size, counts, on_error, on_progress, position), dry_run)
    return ImportSummary("clients", counts["good"], counts["bad_rows"], counts["errors"], dry_run,
                         time.perf_counter() - t0)


async def _write_chunks(store: Any, chunks: Iterator[list[Any]], dry_run: bool) -> None:
    def parse_next() -> list[Any] | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        return [] if dry_run else chunk

    pending: asyncio.Task | None = None
    try:
        while True:
            # The next chunk is parsed (or, from a child process, received) in a thread
            # while the last one is written: the event loop stays free to drive the
            # database, which works in its own process (PostgreSQL) or thread (SQLite).
            # One write in flight, in file order.
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


def _manager_config(m: ManagerIn) -> ManagerConfig:
    return ManagerConfig(extension=m.extension, name=m.name, devices=m.devices)


async def import_managers(store: Any, source: IO[bytes] | bytes, *, on_error: OnError, encoding: str = "utf-8",
                          dry_run: bool = False, on_progress: OnProgress | None = None) -> ImportSummary:
    t0 = time.perf_counter()
    counts = {"good": 0, "bad_rows": 0, "errors": 0}
    for chunk in _chunks(read_managers(source, encoding=encoding), 1000, counts, on_error, on_progress,
                         _position(source)):
        if not dry_run:
            await store.upsert_managers([_manager_config(m) for m in chunk])
    return ImportSummary("managers", counts["good"], counts["bad_rows"], counts["errors"], dry_run,
                         time.perf_counter() - t0)
