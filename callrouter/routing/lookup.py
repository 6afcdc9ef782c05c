"""Phone -> client(s), in microseconds, with a million clients.

`PhoneDirectory` keeps an in-memory snapshot of what routing needs, built from the store
at start and rebuilt on `refresh()` (periodically and on demand):
- the phone index: E.164 numbers as 64-bit integers in a sorted `array('q')` with the
  client row of each in a parallel `array('i')`; a lookup is one binary search, and a
  phone on several clients is several adjacent entries (reported, never resolved);
- the client table: routing's fields of every client in packed columns (ids and names
  as UTF-8 blobs with offsets, owner/tier interned, turnover as doubles, flags as bytes):
  about 60 bytes per client instead of ~400 for Python objects.
Changes the daemon makes itself (REST upsert, CSV import) go in at once through
`refresh_clients(ids)` / `apply_clients(...)`, an overlay the next full refresh folds in.

`StoreLookup` asks the store on every call instead (for `callrouter route`, and as
the fallback while the directory is still loading).
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from array import array
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from callrouter.phone import is_e164
from callrouter.routing.types import ClientInfo, LookupResult

log = logging.getLogger(__name__)


class ClientStore(Protocol):
    """What the lookup needs of `callrouter.store.Store`."""

    def iter_phone_index(self) -> AsyncIterator[tuple[str, str]]: ...
    async def get_clients(self, ids: Iterable[str]) -> Mapping[str, Any]: ...
    async def clients_by_phone(self, e164: str) -> list[Any]: ...


class Lookup(Protocol):
    def lookup_now(self, phone: str | None) -> LookupResult | None:
        """The answer from memory, or None when only the store can answer."""

    async def lookup(self, phone: str | None) -> LookupResult: ...


_AMBIGUOUS_LOGGED: dict[str, float] = {}
AMBIGUOUS_LOG_INTERVAL = 600.0


def _report_ambiguous(phone: str, found: list[ClientInfo]) -> None:
    """Log a call from a phone on several clients: once per phone per 10 minutes (the
    decision itself always carries the candidates)."""
    now = time.monotonic()
    last = _AMBIGUOUS_LOGGED.get(phone)
    if last is not None and now - last < AMBIGUOUS_LOG_INTERVAL:
        return
    if len(_AMBIGUOUS_LOGGED) > 10_000:
        _AMBIGUOUS_LOGGED.clear()
    _AMBIGUOUS_LOGGED[phone] = now
    log.warning("phone %s is on %d clients (%s): routing reports it as ambiguous", phone, len(found),
                ", ".join(c.id for c in found))


def _phone_key(e164: str) -> int | None:
    if not e164 or e164[0] != "+" or not is_e164(e164):
        return None
    return int(e164[1:])


# ------------------------------------------------------------------ packed client table

class _Strings:
    """Many short strings in one UTF-8 blob (a list of str costs ~55 bytes per item)."""
    __slots__ = ("blob", "offsets")

    def __init__(self) -> None:
        self.blob = bytearray()
        self.offsets = array("Q", [0])

    def append(self, s: str) -> None:
        self.blob += s.encode("utf-8", "surrogatepass")
        self.offsets.append(len(self.blob))

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode("utf-8", "surrogatepass")

    def freeze(self) -> None:
        self.blob = bytes(self.blob)  # type: ignore[assignment]


class ClientTable:
    """Routing's view of every client, by row number."""

    def __init__(self) -> None:
        self.ids = _Strings()
        self.names = _Strings()
        self._owners: list[str | None] = [None]
        self._owner_idx: dict[str | None, int] = {None: 0}
        self.owner = array("i")
        self._tiers: list[str | None] = [None]
        self._tier_idx: dict[str | None, int] = {None: 0}
        self.tier = array("i")
        self.turnover = array("d")
        self.flags = bytearray()

    def __len__(self) -> int:
        return len(self.turnover)

    def append(self, c: ClientInfo) -> int:
        row = len(self.turnover)
        self.ids.append(c.id)
        self.names.append(c.name)
        oi = self._owner_idx.get(c.owner_extension)
        if oi is None:
            oi = self._owner_idx[c.owner_extension] = len(self._owners)
            self._owners.append(c.owner_extension)
        self.owner.append(oi)
        ti = self._tier_idx.get(c.tier)
        if ti is None:
            ti = self._tier_idx[c.tier] = len(self._tiers)
            self._tiers.append(c.tier)
        self.tier.append(ti)
        self.turnover.append(math.nan if c.monthly_turnover is None else float(c.monthly_turnover))
        self.flags.append((1 if c.problem else 0) | (2 if c.blocked else 0))
        return row

    def id(self, row: int) -> str:
        return self.ids[row]

    def get(self, row: int) -> ClientInfo:
        t = self.turnover[row]
        f = self.flags[row]
        return ClientInfo(id=self.ids[row], name=self.names[row], owner_extension=self._owners[self.owner[row]],
                          monthly_turnover=None if t != t else t, tier=self._tiers[self.tier[row]],
                          problem=bool(f & 1), blocked=bool(f & 2))

    def freeze(self) -> None:
        self.ids.freeze()
        self.names.freeze()
        self.flags = bytes(self.flags)  # type: ignore[assignment]
        self._owner_idx = {}
        self._tier_idx = {}


# ------------------------------------------------------------------ phone index

@dataclass(frozen=True)
class IndexStats:
    clients: int
    phones: int
    ambiguous_phones: int
    skipped: int           # phone rows not in E.164 or naming an unknown client
    build_seconds: float
    approx_bytes: int


class PhoneIndex:
    """Immutable phone -> client rows, plus the client table."""

    def __init__(self, phones: array, rows: array, table: ClientTable, stats: IndexStats):
        self._phones = phones
        self._rows = rows
        self.table = table
        self.stats = stats

    def rows(self, key: int) -> list[int]:
        phones = self._phones
        i = bisect_left(phones, key)
        n = len(phones)
        out = []
        while i < n and phones[i] == key:
            out.append(self._rows[i])
            i += 1
        return out

    def ambiguous_examples(self, limit: int = 5) -> list[str]:
        out = []
        phones = self._phones
        for i in range(1, len(phones)):
            if phones[i] == phones[i - 1] and (not out or out[-1] != f"+{phones[i]}"):
                out.append(f"+{phones[i]}")
                if len(out) >= limit:
                    break
        return out

    @staticmethod
    def build(pairs: Iterable[tuple[str, str]], clients: Iterable[ClientInfo]) -> PhoneIndex:
        """Synchronous build (tests, benchmarks); the directory builds the same way in steps."""
        b = _Builder()
        for c in clients:
            b.add_client(c)
        b.end_clients()
        for phone, cid in pairs:
            b.add_phone(phone, cid)
        return b.finish()


_SORT_RUN = 1 << 15


class _Builder:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.table = ClientTable()
        self.row_of: dict[str, int] | None = {}
        self.keys: list[int] = []
        self.skipped = 0

    def add_client(self, c: ClientInfo) -> None:
        assert self.row_of is not None
        if c.id in self.row_of:
            return
        self.row_of[c.id] = self.table.append(c)

    def end_clients(self) -> None:
        self.table.freeze()

    def add_phone(self, phone: str, client_id: str) -> None:
        assert self.row_of is not None
        key = _phone_key(phone)
        row = self.row_of.get(client_id)
        if key is None or row is None:
            self.skipped += 1
            return
        self.keys.append((key << 32) | row)

    def finish(self) -> PhoneIndex:
        self.row_of = None  # the id -> row map is only needed while building
        keys = self.keys
        self.keys = []
        # Sorted in runs, then merged: one list.sort() of a million keys would hold the
        # GIL for a few hundred ms in one C call and stall the event loop (and the
        # FastAGI deadline) while a refresh runs in its thread.
        runs = [sorted(keys[i:i + _SORT_RUN]) for i in range(0, len(keys), _SORT_RUN)]
        del keys
        phones, rows = array("q"), array("i")
        for k in (heapq.merge(*runs) if len(runs) > 1 else runs[0] if runs else ()):
            phones.append(k >> 32)
            rows.append(k & 0xFFFFFFFF)
        del runs
        ambiguous = 0
        prev = None
        dup = False
        for p in phones:
            if p == prev:
                if not dup:
                    ambiguous += 1
                    dup = True
            else:
                dup = False
            prev = p
        t = self.table
        approx = (phones.itemsize * len(phones) + rows.itemsize * len(rows) + len(t.ids.blob) + len(t.names.blob)
                  + 8 * (len(t.ids.offsets) + len(t.names.offsets)) + 4 * len(t.owner) + 4 * len(t.tier)
                  + 8 * len(t.turnover) + len(t.flags))
        stats = IndexStats(clients=len(t), phones=len(phones), ambiguous_phones=ambiguous, skipped=self.skipped,
                           build_seconds=time.perf_counter() - self.t0, approx_bytes=approx)
        return PhoneIndex(phones, rows, t, stats)


# ------------------------------------------------------------------ the directory

_TOMBSTONE = None


class PhoneDirectory:
    """In-memory phone -> clients for the FastAGI path. `load()` before serving (until
    then `lookup_now` returns None and callers fall back to the store)."""

    def __init__(self, store: ClientStore, *, batch: int = 5000):
        self._store = store
        self._batch = batch
        self._index: PhoneIndex | None = None
        # client id -> (ClientInfo or None when deleted, phone keys, generation)
        self._overlay: dict[str, tuple[ClientInfo | None, frozenset[int], int]] = {}
        self._overlay_phones: dict[int, set[str]] = {}
        self._gen = 0
        self._refreshing: asyncio.Lock | None = None

    @classmethod
    def from_clients(cls, clients: Iterable[Any], store: ClientStore | None = None) -> PhoneDirectory:
        """A directory already loaded from these clients (store `Client`s with `phones`):
        for tests, benchmarks, and a daemon that gets its clients some other way."""
        items = list(clients)
        d = cls(store)  # type: ignore[arg-type]
        d._index = PhoneIndex.build(((p, c.id) for c in items for p in getattr(c, "phones", ()) or ()),
                                    (ClientInfo.of(c) for c in items))
        return d

    @property
    def ready(self) -> bool:
        return self._index is not None

    @property
    def stats(self) -> IndexStats | None:
        return self._index.stats if self._index is not None else None

    # ---------------------------------------------------------- lookups
    def lookup_now(self, phone: str | None) -> LookupResult | None:
        if phone is None:
            return LookupResult(None, (), "")
        index = self._index
        if index is None:
            return None
        key = _phone_key(phone)
        if key is None:
            return LookupResult(phone, (), "index")
        found: list[ClientInfo] = []
        overlay = self._overlay
        table = index.table
        for row in index.rows(key):
            if overlay:
                cid = table.id(row)
                o = overlay.get(cid)
                if o is not None:
                    if o[0] is not None and key in o[1]:
                        found.append(o[0])
                    continue
            found.append(table.get(row))
        extra = self._overlay_phones.get(key)
        if extra:
            have = {c.id for c in found}
            for cid in sorted(extra - have):
                o = overlay.get(cid)
                if o is not None and o[0] is not None:
                    found.append(o[0])
        if len(found) > 1:
            found.sort(key=lambda c: c.id)
            _report_ambiguous(phone, found)
        return LookupResult(phone, tuple(found), "index")

    async def lookup(self, phone: str | None) -> LookupResult:
        res = self.lookup_now(phone)
        if res is not None:
            return res
        return await StoreLookup(self._store).lookup(phone)

    # ---------------------------------------------------------- building
    async def load(self) -> IndexStats:
        """Build the snapshot from the store and swap it in (the first time, or again)."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            started_gen = self._gen
            b = _Builder()
            n = 0
            async for c in self._iter_clients():
                b.add_client(c)
                n += 1
                if n % self._batch == 0:
                    await asyncio.sleep(0)  # let calls be answered while a big table loads
            b.end_clients()
            async with aclosing(self._store.iter_phone_index()) as it:
                async for phone, cid in it:
                    b.add_phone(phone, cid)
                    n += 1
                    if n % self._batch == 0:
                        await asyncio.sleep(0)
            index = await asyncio.to_thread(b.finish)
            self._index = index
            # overlay entries older than this build are in it now
            for cid, (_, phones, gen) in list(self._overlay.items()):
                if gen <= started_gen:
                    self._drop_overlay(cid, phones)
            s = index.stats
            log.info("phone directory: %d clients, %d phones, %d on several clients, %d skipped, "
                     "%.1f s, ~%.0f MB", s.clients, s.phones, s.ambiguous_phones, s.skipped, s.build_seconds,
                     s.approx_bytes / 1e6)
            if s.ambiguous_phones:
                log.warning("%d phones are on several clients (calls from them are routed as ambiguous), "
                            "e.g. %s", s.ambiguous_phones, ", ".join(index.ambiguous_examples()))
            return s

    refresh = load

    async def run_refresher(self, interval: float) -> None:
        """Rebuild every `interval` seconds (picks up changes other daemons made)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep serving the old snapshot
                log.exception("phone directory refresh failed; the previous snapshot stays in use")

    async def _iter_clients(self) -> AsyncIterator[ClientInfo]:
        """Every client's routing fields: streamed by a store that offers
        `iter_client_fields`, else read via get_clients in chunks."""
        stream = getattr(self._store, "iter_client_fields", None)
        if stream is not None:
            async with aclosing(stream(self._batch)) as rows:
                async for r in rows:
                    yield ClientInfo(id=r[0], name=r[1] or "", owner_extension=r[2] or None,
                                     monthly_turnover=None if r[3] is None else float(r[3]),
                                     tier=r[4] or None, problem=bool(r[5]), blocked=bool(r[6]))
            return
        ids: list[str] = []
        async with aclosing(self._store.iter_phone_index()) as it:
            async for _, cid in it:
                ids.append(cid)
        ids = list(dict.fromkeys(ids))
        for i in range(0, len(ids), self._batch):
            got = await self._store.get_clients(ids[i:i + self._batch])
            for c in got.values():
                yield ClientInfo.of(c)

    # ---------------------------------------------------------- targeted updates
    def apply_clients(self, clients: Iterable[Any], removed: Iterable[str] = ()) -> None:
        """Make changed clients (store `Client`s, with their `phones`) visible at once."""
        for c in clients:
            info = ClientInfo.of(c)
            keys = frozenset(k for k in (_phone_key(p) for p in getattr(c, "phones", ()) or ()) if k is not None)
            self._set_overlay(info.id, info, keys)
        for cid in removed:
            self._set_overlay(cid, _TOMBSTONE, frozenset())

    async def refresh_clients(self, ids: Iterable[str]) -> None:
        """Re-read these clients from the store (after an upsert or a delete)."""
        wanted = list(dict.fromkeys(ids))
        got = await self._store.get_clients(wanted)
        self.apply_clients(got.values(), removed=[i for i in wanted if i not in got])

    def _set_overlay(self, cid: str, info: ClientInfo | None, keys: frozenset[int]) -> None:
        old = self._overlay.get(cid)
        if old is not None:
            self._drop_overlay(cid, old[1])
        self._gen += 1
        self._overlay[cid] = (info, keys, self._gen)
        for k in keys:
            self._overlay_phones.setdefault(k, set()).add(cid)

    def _drop_overlay(self, cid: str, keys: frozenset[int]) -> None:
        self._overlay.pop(cid, None)
        for k in keys:
            s = self._overlay_phones.get(k)
            if s is not None:
                s.discard(cid)
                if not s:
                    del self._overlay_phones[k]


class StoreLookup:
    """Asks the store every time (`clients_by_phone`): for the CLI and small installs."""

    def __init__(self, store: ClientStore):
        self._store = store

    def lookup_now(self, phone: str | None) -> LookupResult | None:
        return LookupResult(None, (), "") if phone is None else None

    async def lookup(self, phone: str | None) -> LookupResult:
        if phone is None:
            return LookupResult(None, (), "")
        found = [ClientInfo.of(c) for c in await self._store.clients_by_phone(phone)]
        found.sort(key=lambda c: c.id)
        if len(found) > 1:
            _report_ambiguous(phone, found)
        return LookupResult(phone, tuple(found), "store")
