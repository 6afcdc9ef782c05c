"""The webhook outbox: finished call records waiting to be POSTed, on disk.

A table (`webhook_outbox`) in the spool file (`[spool] path`, callrouter.store.spool):
the same local SQLite file, written the same way (WAL, `synchronous=FULL`, one
transaction per write), so an item the reporter has put survives a crash or a restart,
and the next daemon delivers it. Its own table, not spool items: the spool's depth means
"not yet in the database" (health, the stop log line) and its drain stores items in the
database; these are in the database already and wait for the CRM.

- Ordered per call: `due` hands out only the oldest undelivered item of each key
  (`pbx:call_id`), so a call's later item never overtakes an earlier one.
- Bounded: at most `max_bytes` of bodies; what does not fit is refused, counted and
  logged (an ERROR naming how many), never silently.
- Attempts and the next try time are stored with the item: a restart keeps the schedule.

Stdlib sqlite3 behind a lock, called through `asyncio.to_thread` (each write is an fsync).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from callrouter.logthrottle import throttled

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_key_seq ON webhook_outbox (key, seq);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    key: str          # pbx:call_id, the Idempotency-Key
    body: bytes       # the call record JSON, as POSTed
    attempts: int     # tries so far
    last_error: str | None = None


class Outbox:
    def __init__(self, path: str | Path, max_bytes: int = 256 * 1024 * 1024):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: Sequence[object] = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # ---------------------------------------------------------------- the reporter's side
    def put(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store (key, body) items durably, in order; returns how many were stored."""
        if not items:
            return 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                used = db.execute("SELECT COALESCE(SUM(length(body)), 0) FROM webhook_outbox").fetchone()[0]
                take, size = 0, 0
                for _, body in items:
                    if used + size + len(body) > self.max_bytes:
                        break
                    size += len(body)
                    take += 1
                db.executemany("INSERT INTO webhook_outbox (key, body) VALUES (?, ?)", items[:take])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self.stats["queued"] += take
        if take < len(items):
            self.stats["refused"] += len(items) - take
            throttled(log, "outbox-full", logging.ERROR, "webhook outbox %s is full (%d bytes): %d call(s) refused "
                      "and NOT SENT (%d so far); is the receiver down for long? raise [webhook] max_bytes",
                      self.path, self.max_bytes, len(items) - take, self.stats["refused"])
        return take

    # ---------------------------------------------------------------- the delivery's side
    def due(self, now: float, limit: int) -> list[OutboxItem]:
        """Up to `limit` items to try now, oldest first, at most one per key: the oldest
        live item of its key (a later item of a call waits for the earlier one)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, key, body, attempts, last_error FROM webhook_outbox o "
                "WHERE dead = 0 AND next_at <= ? AND NOT EXISTS (SELECT 1 FROM webhook_outbox p "
                "WHERE p.key = o.key AND p.dead = 0 AND p.seq < o.seq) ORDER BY seq LIMIT ?", (now, limit)).fetchall()
        return [OutboxItem(*r) for r in rows]

    def delivered(self, *seqs: int) -> None:
        """Gone: one transaction (one fsync) for a round's deliveries."""
        if seqs:
            self._write(f"DELETE FROM webhook_outbox WHERE seq IN ({','.join('?' * len(seqs))})", seqs)

    def failed(self, seq: int, attempts: int, next_at: float, error: str) -> None:
        self._write("UPDATE webhook_outbox SET attempts = ?, next_at = ?, last_error = ? WHERE seq = ?",
                    (attempts, next_at, error[:2000], seq))

    def bury(self, seq: int, attempts: int, error: str) -> None:
        """Given up: kept (not delivered, not blocking its key) until it is a dead letter in the store."""
        self._write("UPDATE webhook_outbox SET attempts = ?, dead = 1, last_error = ? WHERE seq = ?",
                    (attempts, error[:2000], seq))

    def buried(self, limit: int = 100) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute("SELECT seq, key, body, attempts, last_error FROM webhook_outbox WHERE dead = 1 "
                                    "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [OutboxItem(*r) for r in rows]

    def depth(self) -> int:
        """Items waiting to be delivered (not the buried ones)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM webhook_outbox WHERE dead = 0").fetchone()[0])
