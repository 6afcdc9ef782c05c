"""The client CSV parser in a child process, for a big import from a file on disk.

Parsing (CSV, cells, phone numbers) is most of an import's work, and in the importing
process it shares one GIL with the database driver encoding the rows it writes. In a
child it gets a core of its own: measured on a million-row file, the import went from
about 60 s to the figure in README "Benchmarks". The child reads the file itself (by
path) and sends the parser's items, in file order, in batches of about `batch` good
rows; the pipe holds at most a batch or two, so memory stays flat and a slow database
slows the child down rather than piling rows up.

    with ParsedInChild(path, region="RU", known_owners={"101"}, encoding="utf-8") as child:
        for item in child:                      # ClientRecord | RowError, as read_client_records
            ...
        child.position                          # bytes of the file read so far

A problem with the file as a whole (CsvFormatError) or anything else the child raises
is raised again in the parent, from the iteration. Leaving the `with` ends the child.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Container, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from callrouter.crm.csvimport import RowError, read_client_records
from callrouter.store.clients import ClientRecord

# spawn, not fork: the parent runs an event loop and threads, which a fork would copy
# half-way; the child's ~1 s of imports overlaps the parent's own start
_CONTEXT = multiprocessing.get_context("spawn")


def _child(path: str, region: str, known_owners: Container[str] | None, encoding: str, batch: int,
           out: Connection) -> None:
    """The child's work: every item of the file, in batches, then ("done", position)."""
    try:
        with open(path, "rb") as f:
            items: list[tuple | RowError] = []
            good = 0
            for item in read_client_records(f, region=region, known_owners=known_owners, encoding=encoding):
                if isinstance(item, RowError):
                    items.append(item)
                    continue
                items.append(tuple(item))  # a plain tuple pickles without a class lookup per row
                good += 1
                if good >= batch:
                    out.send(("items", items, f.tell()))
                    items, good = [], 0
            out.send(("items", items, f.tell()))
            out.send(("done", None, f.tell()))
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
        out.send(("error", e, 0))
    finally:
        out.close()


class ParsedInChild:
    def __init__(self, path: str | Path, *, region: str, known_owners: Container[str] | None, encoding: str,
                 batch: int = 5000):
        self.position = 0
        receive, send = _CONTEXT.Pipe(duplex=False)
        self._receive = receive
        self._process = _CONTEXT.Process(
            target=_child, args=(str(path), region, known_owners, encoding, batch, send),
            name="callrouter-import-parser", daemon=True)
        self._process.start()
        send.close()  # the child's end: the parent sees EOF if the child dies

    def __iter__(self) -> Iterator[ClientRecord | RowError]:
        make = ClientRecord._make
        while True:
            try:
                kind, payload, self.position = self._receive.recv()
            except EOFError:
                raise RuntimeError(f"the parser process ended unexpectedly "
                                   f"(exit code {self._process.exitcode})") from None
            if kind == "done":
                return
            if kind == "error":
                raise payload
            for item in payload:
                yield item if isinstance(item, RowError) else make(item)

    def close(self) -> None:
        self._receive.close()
        self._process.join(0.5)  # done: it is closing its end
        if self._process.is_alive():
            self._process.kill()  # the parent stopped early (an error, a cancel): nothing to finish
            self._process.join(5)

    def __enter__(self) -> ParsedInChild:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
