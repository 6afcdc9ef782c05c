"""The spool: a local SQLite file holding the call records and routing decisions (with
their leads) the database did not take, until it takes them.

- Durable: `PRAGMA synchronous=FULL` in WAL mode, one transaction per `put`: when `put`
  returns, the items are on disk (a SIGKILL or a power cut after that loses nothing).
- Bounded: at most `max_bytes` of payload. A `put` that does not fit stores what fits,
  refuses the rest, counts it (`stats["refused"]`) and logs an ERROR saying how many of
  what were lost - never silently.
- Ordered: items keep their order per kind (`seq`); the drain (`SpoolDrain`) replays the
  oldest first, and the writers send new batches here untried while older ones wait
  (`BatchWriter(backlog=...)`), so a call's later record never lands before an earlier one.
- Shared: the daemon and its decision-log child open the same file (SQLite's locking;
  each `put` is `BEGIN IMMEDIATE`); the per-kind depth and bytes live in the file, so
  `depth()` is right whoever wrote.
- Exactly once in the store: replaying is safe because every insert is idempotent
  (records: upsert on (pbx, call_id); decisions: ON CONFLICT DO NOTHING on
  (pbx, uniqueid, decided_at), migration 0002; leads: on (pbx, phone)). An item is
  deleted from the spool only after its batch committed; a crash in between replays it.

Why stdlib sqlite3 (a connection per thread; async callers go through
`asyncio.to_thread`), not aiosqlite: a put is an fsync (~0.5 ms for one item, ~12 ms for
500 here), so it must stay off the event loop either way, and `tests/bench/spool.py`
measured both at the same rate (puts/s, ours vs aiosqlite: 0.71-1.37x for one item,
0.88-0.89x for 100); plain sqlite3 also serves the callers that are not coroutines (the
writers' depth check on every batch, a sync give-up path, the decision-log child) with
one implementation. The payloads are the items' own formats: a record's
JSON, a decision's pickle (the same bytes the decision log's pipe carries; the file is
created 0600 and only this daemon writes it).
"""
from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sqlite3
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callrouter.logthrottle import throttled
from callrouter.records import CallRecord
from callrouter.routing.decision import RoutedCall

from .deadletters import DeadLetter
from .writer import WritePolicy, save_or_split

log = logging.getLogger(__name__)

RECORD = "record"
DECISION = "decision"
KINDS = (RECORD, DECISION)
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                                  payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS items_kind_seq ON items (kind, seq);
CREATE TABLE IF NOT EXISTS totals (kind TEXT PRIMARY KEY, depth INTEGER NOT NULL, bytes INTEGER NOT NULL);
"""


# ------------------------------------------------------------------ the items' formats

def encode_record(record: CallRecord) -> bytes:
    return record.model_dump_json(by_alias=True).encode()


def decode_record(payload: bytes) -> CallRecord:
    return CallRecord.model_validate_json(payload)


def encode_decision(call: RoutedCall) -> bytes:
    return pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)


def decode_decision(payload: bytes) -> RoutedCall:
    call = pickle.loads(payload)
    if not isinstance(call, RoutedCall):
        raise TypeError(f"not a route decision: {type(call).__name__}")
    return call


def record_key(record: CallRecord) -> str:
    return f"{record.pbx}/{record.call_id}"


def decision_key(call: RoutedCall) -> str:
    return f"{call.pbx}/{call.uniqueid}@{call.decided_at.isoformat()}"


def record_dead_letter(record: CallRecord, error: BaseException) -> DeadLetter:
    return DeadLetter.of(RECORD, record_key(record), record.to_dict(), error)


def decision_dead_letter(call: RoutedCall, error: BaseException) -> DeadLetter:
    from .routing import decision_columns

    return DeadLetter.of(DECISION, decision_key(call), decision_columns(call), error)


# ------------------------------------------------------------------ the file

class Spool:
    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.stats: Counter[str] = Counter()
        # one connection per thread (the event loop's, to_thread's workers): WAL readers
        # never wait for a writer's fsync, and writers queue on SQLite's own lock
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # private: decisions are pickles
        os.close(fd)
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            self._local.db = db
            with self._opened_lock:
                self._opened.append(db)
        return db

    def close(self) -> None:
        with self._opened_lock:
            for db in self._opened:
                db.close()
            self._opened.clear()
        self._local = threading.local()

    # ---------------------------------------------------------------- writing
    def put(self, kind: str, payloads: Sequence[bytes]) -> int:
        """Store `payloads` (in order) durably; returns how many were stored. What does
        not fit in `max_bytes` is refused, counted and logged."""
        if not payloads:
            return 0
        db = self._conn()
        # one transaction: the room check and the insert see the same totals
        db.execute("BEGIN IMMEDIATE")
        try:
            used = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM totals").fetchone()[0]
            room = self.max_bytes - used
            take = 0
            size = 0
            for p in payloads:
                if size + len(p) > room:
                    break
                size += len(p)
                take += 1
            if take:
                db.executemany("INSERT INTO items (kind, payload) VALUES (?, ?)",
                               [(kind, p) for p in payloads[:take]])
                db.execute("INSERT INTO totals (kind, depth, bytes) VALUES (?, ?, ?) ON CONFLICT (kind) "
                           "DO UPDATE SET depth = depth + excluded.depth, bytes = bytes + excluded.bytes",
                           (kind, take, size))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.stats["spooled"] += take
        refused = len(payloads) - take
        if refused:
            self.stats["refused"] += refused
            throttled(log, "spool-full", logging.ERROR,
                      "spool %s is full (%d of %d bytes): %d %s(s) refused and NOT STORED ANYWHERE "
                      "(%d refused so far); raise [spool] max_bytes or bring the database back",
                      self.path, used + size, self.max_bytes, refused, kind, self.stats["refused"])
        return take

    async def aput(self, kind: str, payloads: Sequence[bytes]) -> int:
        """`put` off the event loop (its fsync)."""
        return await asyncio.to_thread(self.put, kind, payloads)

    # ---------------------------------------------------------------- reading
    def peek(self, kind: str, n: int) -> list[tuple[int, bytes]]:
        """The oldest `n` items of `kind`: (seq, payload)."""
        return self._conn().execute("SELECT seq, payload FROM items WHERE kind = ? ORDER BY seq LIMIT ?",
                                    (kind, n)).fetchall()

    def delete(self, kind: str, seqs: Sequence[int]) -> None:
        """Forget items that are in the database now."""
        if not seqs:
            return
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            size = 0
            for chunk in range(0, len(seqs), 500):
                part = list(seqs[chunk:chunk + 500])
                marks = ",".join("?" * len(part))
                size += db.execute(f"SELECT COALESCE(SUM(length(payload)), 0) FROM items WHERE seq IN ({marks})",
                                   part).fetchone()[0]
                db.execute(f"DELETE FROM items WHERE seq IN ({marks})", part)
            db.execute("UPDATE totals SET depth = depth - ?, bytes = bytes - ? WHERE kind = ?",
                       (len(seqs), size, kind))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def depth(self, kind: str | None = None) -> int:
        """Items held (of `kind`, or all), whoever put them."""
        if kind is None:
            row = self._conn().execute("SELECT COALESCE(SUM(depth), 0) FROM totals").fetchone()
        else:
            row = self._conn().execute("SELECT depth FROM totals WHERE kind = ?", (kind,)).fetchone()
        return int(row[0]) if row else 0

    def size(self) -> int:
        """Payload bytes held."""
        return int(self._conn().execute("SELECT COALESCE(SUM(bytes), 0) FROM totals").fetchone()[0])

    def has(self, kind: str) -> bool:
        return self.depth(kind) > 0


# ------------------------------------------------------------------ draining

@dataclass(frozen=True, slots=True)
class Kind:
    """How the drain stores one kind of item."""
    decode: Callable[[bytes], Any]
    save: Callable[[Sequence[Any]], Awaitable[object]]
    dead: Callable[[Any, Exception], Awaitable[object]]
    describe: Callable[[Any], str]


# one try per batch: the drain's own backoff paces the next
_DRAIN_POLICY = WritePolicy(attempts=1)


class SpoolDrain:
    """Replays the spool into the store, oldest first, whenever it holds anything: the
    task the daemon's TaskGroup owns. A batch the database refuses is split (the writers'
    policy, `save_or_split`): an item refused alone becomes a dead letter. While the
    database is away it backs off (`retry_min` doubling to `retry_max`) and tries again."""

    def __init__(self, spool: Spool, store: Any, *, batch: int = 500, poll: float = 0.5,
                 retry_min: float = 0.5, retry_max: float = 5.0):
        self.spool = spool
        self.batch = batch
        self.poll = poll
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.kinds = {
            RECORD: Kind(decode_record, store.save_calls,
                         lambda r, e: store.save_dead_letters([record_dead_letter(r, e)]), record_key),
            DECISION: Kind(decode_decision, store.save_routing_batch,
                           lambda c, e: store.save_dead_letters([decision_dead_letter(c, e)]), decision_key),
        }
        self.stats: Counter[str] = Counter()
        self._draining = False

    async def run(self) -> None:
        delay = self.retry_min
        while True:
            try:
                progressed, failed = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the spool file itself failed: say so, try again later
                log.exception("spool drain failed")
                progressed, failed = False, True
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                delay = self.retry_min
                if not progressed:
                    await asyncio.sleep(self.poll)

    async def _round(self) -> tuple[bool, bool]:
        """One batch of each kind that has any: (anything stored, the database failed)."""
        progressed = failed = False
        for name, kind in self.kinds.items():
            items = await asyncio.to_thread(self.spool.peek, name, self.batch)
            if not items:
                continue
            if not self._draining:
                self._draining = True
                log.info("spool: %d item(s) waiting; replaying them into the database", self.spool.depth())
            decoded, seqs, bad = [], [], []
            for seq, payload in items:
                try:
                    decoded.append(kind.decode(payload))
                    seqs.append(seq)
                except Exception as e:  # noqa: BLE001 - a spooled item this version cannot read
                    log.error("spool: %s item %d unreadable (%s): dropped", name, seq, e)
                    self.stats["unreadable"] += 1
                    bad.append(seq)
            await asyncio.to_thread(self.spool.delete, name, bad)
            result = await save_or_split(kind.save, decoded, _DRAIN_POLICY, what=f"spooled {name}", on_dead=kind.dead)
            done = len(decoded) - len(result.left)
            await asyncio.to_thread(self.spool.delete, name, seqs[:done])
            self.stats[f"{name}-drained"] += len(result.saved)
            self.stats[f"{name}-dead"] += len(result.dead)
            for item, error in result.dead:
                log.error("spooled %s refused by the database twice, kept as a dead letter (%s): %s", name,
                          str(error)[:200], kind.describe(item))
            progressed |= done > 0
            if result.left:
                throttled(log, "spool-drain", logging.WARNING, "spool: the database does not take %s(s) yet "
                          "(%s: %s); %d waiting", name, type(result.error).__name__, str(result.error)[:200],
                          self.spool.depth())
                failed = True
                break
        if self._draining and not failed and not progressed:
            self._draining = False
            log.info("spool: empty; everything is in the database")
        return progressed, failed
