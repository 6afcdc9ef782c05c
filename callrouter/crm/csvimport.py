"""CSV files of clients and managers -> validated `ClientIn` / `ManagerIn`, and row errors.

No I/O of its own beyond reading the stream it is given, no event loop, no database: the
CLI (`callrouter import`) and the REST bulk endpoint (`text/csv` bodies) share it.

    for item in read_clients(open("clients.csv", "rb"), region="RU", known_owners={"101"}):
        if isinstance(item, RowError): report(item)
        else: save(item)                  # a ClientIn, phones in E.164

`read_client_records` is the same reader for a big import: the same rows and errors, each
good row as the store's ClientRecord, most rows checked without building a model.

The file: a header row naming the columns, in any order (`id` required, the others
optional: CLIENT_COLUMNS, MANAGER_COLUMNS); UTF-8 with or without a BOM; the delimiter
(`,`, `;` as spreadsheet programs in Russia write it, or tab) read from the header row.
An empty cell is "unknown" (no owner, no turnover, no tier; flags false). Lists (phones,
devices) are separated by `;` or `,` inside the cell (quote the cell when the file's
delimiter is the same character). Numbers take a decimal comma and spaces between digit
groups (`1 234,56`). Flags: yes/no, true/false, 1/0, y/n, да/нет.

Rows are numbered as a spreadsheet numbers them: the header is row 1. A bad row yields one
`RowError` per bad field and is not imported: a phone that does not normalize in the
region, an owner who is not a known manager, a bad number or flag, a duplicate id (the
first row with it wins), a missing id, bytes that are not in the file's encoding (the
reason shows how they read as Windows-1251, the usual culprit), a wrong number of cells.
A problem with the file as a whole (no header, an unknown or repeated column, no `id`
column) raises CsvFormatError before any row.

Rows are read one at a time (a million-row file is never held in memory); only the ids
seen so far are kept, to find duplicates.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from callrouter.crm.models import MAX_PHONES as _MAX_PHONES
from callrouter.crm.models import ClientIn, ManagerIn
from callrouter.phone import DEFAULT_REGION, MAX_RAW_LENGTH, normalize
from callrouter.store.clients import ClientRecord

CLIENT_COLUMNS = ("id", "name", "phones", "owner_extension", "monthly_turnover", "tier", "problem", "blocked")
MANAGER_COLUMNS = ("extension", "name", "devices")
DELIMITERS = (",", ";", "\t")

_TRUE = frozenset({"yes", "y", "true", "t", "1", "да", "д", "on"})
_FALSE = frozenset({"no", "n", "false", "f", "0", "нет", "н", "off"})
_LIST_SPLIT = re.compile(r"[;,\n]")
_DEVICE_SPLIT = re.compile(r"[;,\s]+")
_DEVICE = re.compile(r"[^/\s]+/\S+")
_PHONE_PUNCTUATION = str.maketrans("", "", " ()-./\u00a0")
_GROUP_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009'")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


@dataclass(frozen=True, slots=True)
class RowError:
    row: int            # as a spreadsheet numbers it: the header is row 1
    field: str | None   # the column, or None for the row as a whole
    reason: str


class CsvFormatError(ValueError):
    """The file as a whole cannot be read (header, columns, encoding of the header)."""


# ------------------------------------------------------------------ cells

def parse_number(text: str) -> float:
    """`1 234,56`, `1234.56`, `1,234.56`, `1.234,56` -> 1234.56; ValueError otherwise."""
    s = text.translate(_GROUP_SPACES)
    if "," in s and "." in s:  # the later one is the decimal point
        s = s.replace(".", "").replace(",", ".") if s.rfind(",") > s.rfind(".") else s.replace(",", "")
    elif s.count(",") == 1:
        s = s.replace(",", ".")
    elif s.count(",") > 1:
        s = s.replace(",", "")
    if not _NUMBER.fullmatch(s):
        raise ValueError(f"not a number: {text!r}")
    return float(s)


def parse_flag(text: str) -> bool:
    v = text.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"not a yes/no value: {text!r} (yes/no, true/false, 1/0, да/нет)")


def split_list(text: str, pattern: re.Pattern[str] = _LIST_SPLIT) -> tuple[str, ...]:
    return tuple(p for p in (x.strip() for x in pattern.split(text)) if p)


def split_phones(text: str) -> tuple[str, ...]:
    """A phones cell -> the phones, with the formatting characters `normalize` ignores
    taken out (`8 (916) 123-45-67` -> `89161234567`): the normalizer's fast path takes
    the compact form, 3x quicker on a million-row file, same result (tests/test_csvimport.py);
    no-break spaces, which spreadsheets put in numbers, go too.
    A phone too long to be one is passed as written, for normalize to reject."""
    if ";" not in text and "," not in text and "\n" not in text:  # one phone, the common case
        p = text.strip()
        return () if not p else (p.translate(_PHONE_PUNCTUATION) if len(p) <= MAX_RAW_LENGTH else p,)
    return tuple(p.translate(_PHONE_PUNCTUATION) if len(p) <= MAX_RAW_LENGTH else p
                 for p in split_list(text))


def _not_decoded(text: str, encoding: str) -> str:
    raw = text.encode(encoding, "surrogateescape")
    shown = raw.decode("cp1251", "replace") if encoding.replace("-", "").lower() != "cp1251" else raw.hex(" ")
    return (f"not valid {encoding} (read as Windows-1251 it says {shown!r}): save the file as UTF-8 "
            f"or give its encoding")


# ------------------------------------------------------------------ the reader

class _Rows:
    """Header-checked rows of one file: (row number, cells in header order) with encoding
    and cell-count problems turned into RowErrors (a tuple of them in place of the cells)."""

    def __init__(self, source: IO[bytes] | bytes, columns: tuple[str, ...], required: str, encoding: str):
        if isinstance(source, bytes | bytearray):
            source = io.BytesIO(source)
        self.encoding = encoding
        # utf-8-sig drops a BOM; surrogateescape keeps undecodable bytes so the row and
        # cell they are in can be named instead of failing the whole file
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        self._text = io.TextIOWrapper(source, encoding=codec, errors="surrogateescape", newline="")
        try:
            self._read_header(columns, required)
        except BaseException:
            self._text.detach()
            raise
        self._reader = csv.reader(self._text, delimiter=self.delimiter)

    def _read_header(self, columns: tuple[str, ...], required: str) -> None:
        first = self._text.readline()
        if not first.strip():
            raise CsvFormatError("the file is empty: the first row must name the columns "
                                 f"({', '.join(columns)})")
        if _has_undecoded(first):
            raise CsvFormatError(f"the header row is {_not_decoded(first, self.encoding)}")
        self.delimiter = max(DELIMITERS, key=first.count) if any(d in first for d in DELIMITERS) else ","
        header = next(csv.reader([first], delimiter=self.delimiter))
        self.header = [h.strip().lower() for h in header]
        unknown = [h for h in self.header if h not in columns]
        if unknown:
            raise CsvFormatError(f"unknown column {', '.join(map(repr, unknown))} in the header; "
                                 f"known: {', '.join(columns)}")
        repeated = sorted({h for h in self.header if self.header.count(h) > 1})
        if repeated:
            raise CsvFormatError(f"column(s) {', '.join(map(repr, repeated))} appear more than once in the header")
        if required not in self.header:
            raise CsvFormatError(f"the header has no {required!r} column (it has: {', '.join(self.header)})")

    def __iter__(self) -> Iterator[tuple[int, list[str] | tuple[RowError, ...]]]:
        try:
            yield from self._rows()
        finally:
            self._text.detach()  # the caller's stream stays open (a collected wrapper closes it)

    def _rows(self) -> Iterator[tuple[int, list[str] | tuple[RowError, ...]]]:
        width = len(self.header)
        row = 1
        while True:
            row += 1
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield row, (RowError(row, None, f"not readable as CSV: {e}"),)
                continue
            joined = "".join(cells)  # one string to check instead of eight
            if not joined.strip():
                continue  # a blank line
            if len(cells) > width and not any(c.strip() for c in cells[width:]):
                cells = cells[:width]  # trailing empty cells, as some spreadsheets write
            if len(cells) != width:
                yield row, (RowError(row, None, f"{len(cells)} cells, the header has {width} "
                                                f"(a {self.delimiter!r} inside a cell needs quotes)"),)
                continue
            if _has_undecoded(joined):  # (cells cut off above are blank: nothing undecoded)
                yield row, tuple(RowError(row, k, _not_decoded(v, self.encoding))
                                 for k, v in zip(self.header, cells, strict=True) if _has_undecoded(v))
                continue
            yield row, cells


def _has_undecoded(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:  # lone surrogates: bytes the codec could not decode
        return True


def _validate(model: type[BaseModel], row: int, data: dict[str, Any], context: dict[str, Any],
              errors: list[RowError]) -> Any:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        for err in e.errors(include_url=False, include_input=False):
            loc = err["loc"]
            msg = err["msg"].removeprefix("Value error, ")
            errors.append(RowError(row, str(loc[0]) if loc else None, msg))
        return None


def _convert(record: dict[str, str], row: int, converters: dict[str, Callable[[str], Any]],
             errors: list[RowError]) -> dict[str, Any]:
    """Cells -> model input: empty cells left out (the model's "unknown"), the rest converted."""
    data: dict[str, Any] = {}
    for key, cell in record.items():
        if not cell.strip():
            continue
        conv = converters.get(key)
        if conv is None:
            data[key] = cell
            continue
        try:
            data[key] = conv(cell)
        except ValueError as e:
            errors.append(RowError(row, key, str(e)))
    return data


_CLIENT_CELLS: dict[str, Callable[[str], Any]] = {
    "phones": split_phones, "monthly_turnover": parse_number, "problem": parse_flag, "blocked": parse_flag}


def _devices(text: str) -> tuple[str, ...]:
    devices = split_list(text, _DEVICE_SPLIT)
    bad = [d for d in devices if not _DEVICE.fullmatch(d)]
    if bad:
        raise ValueError(f"device {bad[0]!r} is not TECH/resource (e.g. PJSIP/101)")
    return devices


_MANAGER_CELLS: dict[str, Callable[[str], Any]] = {"devices": _devices}


def read_clients(source: IO[bytes] | bytes, *, region: str = DEFAULT_REGION,
                 known_owners: Container[str] | None = None, encoding: str = "utf-8",
                 ) -> Iterator[ClientIn | RowError]:
    """Each good row as a ClientIn, each problem as a RowError, in file order.
    `known_owners`: the manager extensions an owner must be one of (None: not checked).
    Every row is validated by the model: the reference `read_client_records` is held to."""
    rows = _Rows(source, CLIENT_COLUMNS, "id", encoding)
    first_row: dict[str, int] = {}
    for row, cells in rows:
        if isinstance(cells, tuple):
            yield from cells
            continue
        yield from _client_by_model(rows.header, row, cells, region, known_owners, first_row)


def read_client_records(source: IO[bytes] | bytes, *, region: str = DEFAULT_REGION,
                        known_owners: Container[str] | None = None, encoding: str = "utf-8",
                        ) -> Iterator[ClientRecord | RowError]:
    """`read_clients` for a big import: the same rows and the same errors, each good row
    as the ClientRecord the store writes. A row that is plainly well-formed (no cell
    to strip, every value in its common form, every phone normalizing) is checked here
    without building a ClientIn, a third of the time per row; any other row, and every
    bad one, goes through the model exactly as in `read_clients` (tests/test_csvimport.py
    compares the two on fuzzed files)."""
    rows = _Rows(source, CLIENT_COLUMNS, "id", encoding)
    quick = _QuickClient(rows.header, region, known_owners)
    first_row: dict[str, int] = {}
    for row, cells in rows:
        if isinstance(cells, tuple):
            yield from cells
            continue
        record = quick.check(cells, first_row)
        if record is not None:
            first_row[record.id] = row
            yield record
            continue
        for item in _client_by_model(rows.header, row, cells, region, known_owners, first_row):
            yield item if isinstance(item, RowError) else _record(item)


def _client_by_model(header: list[str], row: int, cells: list[str], region: str,
                     known_owners: Container[str] | None, first_row: dict[str, int]) -> Iterator[ClientIn | RowError]:
    """One row through ClientIn: the client, or every problem the row has."""
    record = dict(zip(header, cells, strict=True))
    errors: list[RowError] = []
    cid = record.get("id", "").strip()
    if not cid:
        errors.append(RowError(row, "id", "missing: every client needs an id"))
    elif cid in first_row:
        errors.append(RowError(row, "id", f"duplicate id {cid!r}: first on row {first_row[cid]}; "
                                          "this row is not imported"))
    data = _convert(record, row, _CLIENT_CELLS, errors)
    owner = data.get("owner_extension", "").strip()
    if owner and known_owners is not None and owner not in known_owners:
        errors.append(RowError(row, "owner_extension", f"unknown owner {owner!r}: no manager has this extension"))
    client = _validate(ClientIn, row, data, {"region": region}, errors) if cid else None
    if errors:
        yield from errors
        return
    first_row[client.id] = row
    yield client


def _record(c: ClientIn) -> ClientRecord:
    return ClientRecord(c.id, c.name, c.owner_extension, c.monthly_turnover, c.tier, c.problem, c.blocked,
                        c.phones)


# every flag as a spreadsheet commonly writes it; others (" Yes ", "ДА") take parse_flag
_FLAGS = {**{v: True for v in _TRUE}, **{v: False for v in _FALSE},
          **{v.upper(): True for v in _TRUE}, **{v.upper(): False for v in _FALSE},
          **{v.capitalize(): True for v in _TRUE}, **{v.capitalize(): False for v in _FALSE}}
_EXTENSION = re.compile(r"[0-9A-Za-z*#+_-]{1,32}")  # = models.Extension's pattern


class _QuickClient:
    """ClientIn's checks for a row that is plainly well-formed, without the model: the
    ClientRecord that ClientIn would give, or None for "let the model decide" (a cell
    with spaces to strip, a value too long, a phone that does not normalize, an unknown
    owner, anything else that is an error or unusual). Never accepts what ClientIn refuses."""

    def __init__(self, header: list[str], region: str, known_owners: Container[str] | None):
        # a column the file does not have reads as an empty cell, appended to the row
        self._missing = len(header) if any(c not in header for c in CLIENT_COLUMNS) else None
        at = {c: header.index(c) if c in header else len(header) for c in CLIENT_COLUMNS}
        self._at = tuple(at[c] for c in CLIENT_COLUMNS)
        self._region = region
        self._owners = known_owners

    def check(self, cells: list[str], first_row: Container[str]) -> ClientRecord | None:
        if self._missing is not None:
            cells = [*cells, ""]
        i_id, i_name, i_phones, i_owner, i_turnover, i_tier, i_problem, i_blocked = self._at
        cid = cells[i_id]
        # ClientIn strips ids, names, tiers and owners: a cell with nothing to strip is
        # the value as is (Python's whitespace includes all pydantic strips)
        if not cid or len(cid) > 64 or cid != cid.strip() or cid in first_row:
            return None
        name = cells[i_name]
        if len(name) > 200 or name != name.strip():
            return None
        tier = cells[i_tier]
        if len(tier) > 200 or tier != tier.strip():
            return None
        owner = cells[i_owner]
        if owner and (not _EXTENSION.fullmatch(owner) or (self._owners is not None and owner not in self._owners)):
            return None
        turnover: float | None = None
        if cell := cells[i_turnover]:
            try:
                turnover = parse_number(cell)
            except ValueError:
                return None
            if not turnover >= 0:
                return None
        problem = self._flag(cells[i_problem])
        blocked = self._flag(cells[i_blocked])
        if problem is None or blocked is None:
            return None
        phones: tuple[str, ...] = ()
        if cell := cells[i_phones]:
            raw = split_phones(cell)
            if len(raw) > _MAX_PHONES:
                return None
            e164 = set()
            for p in raw:
                e = normalize(p, self._region)
                if e is None:
                    return None
                e164.add(e)
            phones = tuple(sorted(e164))
        return ClientRecord(cid, name, owner or None, turnover, tier or None, problem, blocked, phones)

    @staticmethod
    def _flag(cell: str) -> bool | None:
        if not cell:
            return False
        v = _FLAGS.get(cell)
        if v is not None:
            return v
        try:
            return parse_flag(cell)
        except ValueError:
            return None


def read_managers(source: IO[bytes] | bytes, *, encoding: str = "utf-8") -> Iterator[ManagerIn | RowError]:
    """Each good row as a ManagerIn, each problem as a RowError, in file order."""
    rows = _Rows(source, MANAGER_COLUMNS, "extension", encoding)
    first_row: dict[str, int] = {}
    for row, cells in rows:
        if isinstance(cells, tuple):
            yield from cells
            continue
        record = dict(zip(rows.header, cells, strict=True))
        errors: list[RowError] = []
        ext = record.get("extension", "").strip()
        if not ext:
            errors.append(RowError(row, "extension", "missing: every manager needs an extension"))
        elif ext in first_row:
            errors.append(RowError(row, "extension", f"duplicate extension {ext!r}: first on row "
                                                     f"{first_row[ext]}; this row is not imported"))
        data = _convert(record, row, _MANAGER_CELLS, errors)
        manager = _validate(ManagerIn, row, data, {}, errors) if ext else None
        if errors:
            yield from errors
            continue
        first_row[manager.extension] = row
        yield manager
