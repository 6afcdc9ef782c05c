"""The client change feed: which clients another process changed, for the daemon's
in-memory directory (`Daemon.clients_changed`), within a second, on both backends.

Database triggers (migration 0004) append the id of every client inserted, updated,
deleted or whose phones changed to `client_changes`, whoever wrote it (`callrouter
import`, another daemon's REST API, plain SQL). `ClientChangeFeed` follows that table:

- It polls `seq > last` every `POLL` s. On PostgreSQL it also LISTENs (a dedicated
  asyncpg connection, reconnected with backoff) for the triggers' NOTIFY, which wakes the
  poll at once; while that connection is up, the poll is only a safety net (`POLL_LISTENING`).
  The table, not the notification, is the truth: a NOTIFY lost with a dropped connection
  costs latency, never a change.
- PostgreSQL hands out `seq`s at insert time but transactions commit in any order, so a
  follower can see seq 12 before seq 11 commits. A seq skipped over is kept as a *hole*
  and asked for again until it shows up or `HOLE_TIMEOUT` passes (rolled back).
- Many changes at once (an import) are reported as `None`, "reload everything", instead
  of a million ids: the directory rebuilds its snapshot rather than growing its overlay.
- After a failed poll the follower may have missed pruned rows: it reports `None` too.
- Each follower prunes rows it saw `RETENTION` s ago (several daemons pruning is harmless).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.engine import make_url

from callrouter.logthrottle import throttled

from .schema import ClientChange

log = logging.getLogger(__name__)

CHANNEL = "callrouter_client_changes"  # = the triggers' pg_notify channel (migration 0004)
POLL = 0.25              # s between polls without a listener (SQLite; PostgreSQL while LISTEN is down)
POLL_LISTENING = 2.0     # s between safety polls while LISTEN is up
PAGE = 20_000            # change rows read per query
BULK = 20_000            # more changed clients than this since the last full reload: reload everything
HOLE_TIMEOUT = 120.0     # s a skipped seq is waited for (longer than any of our transactions)
MAX_HOLES = 10_000
RETENTION = 600.0        # s a change row is kept after this follower saw it
PRUNE_BATCH = 10_000
LISTEN_CHECK = 30.0      # s between liveness checks of the LISTEN connection
RECONNECT_MAX = 30.0

_changes = ClientChange.__table__

OnChange = Callable[[frozenset[str] | None], Awaitable[Any]]


class ClientChangeFeed:
    """`await feed.start()` (before the directory's first load: nothing between the two is
    missed), then `await feed.run(on_change)`: `on_change(ids)` with the changed client ids,
    or `on_change(None)` when the caller should reload every client."""

    def __init__(self, store: Any, *, poll: float = POLL, listen: bool = True):
        self._store = store
        self._poll = poll
        self._listen = listen
        self.last_seq = 0
        self._holes: dict[int, float] = {}      # seq -> when it was first skipped
        self._seen: deque[tuple[float, int]] = deque()  # (when, last_seq) for pruning
        self._since_reload = 0
        self._wake = asyncio.Event()
        self.listening = False
        self.stats = {"polls": 0, "changes": 0, "reloads": 0, "notifications": 0, "poll_errors": 0}

    async def start(self) -> None:
        async with self._store.engine.connect() as conn:
            self.last_seq = (await conn.scalar(select(func.max(_changes.c.seq)))) or 0

    async def run(self, on_change: OnChange) -> None:
        async with asyncio.TaskGroup() as tg:
            if self._listen and self._store.engine.dialect.name == "postgresql":
                tg.create_task(self._listen_forever(), name="client-changes-listen")
            tg.create_task(self._follow(on_change), name="client-changes-poll")

    # ------------------------------------------------------------------ polling
    async def _follow(self, on_change: OnChange) -> None:
        failed = False
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_LISTENING if self.listening else self._poll)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                ids = await self.poll_once()
            except Exception as e:  # noqa: BLE001 - the database is down: try again, report later
                self.stats["poll_errors"] += 1
                failed = True
                throttled(log, "poll", logging.WARNING, "client change feed: poll failed (%s: %s); retrying",
                          type(e).__name__, e)
                await asyncio.sleep(1.0)
                continue
            if failed:  # rows may have been pruned meanwhile: reload everything
                ids, failed = None, False
            if ids is not None and not ids:
                await self._prune()
                continue
            if ids is None:
                self.stats["reloads"] += 1
            try:
                await on_change(ids)
            except Exception:  # noqa: BLE001 - a failed refresh must not stop the feed
                log.exception("client change feed: applying %s failed",
                              "a full reload" if ids is None else f"{len(ids)} change(s)")
            await self._prune()

    async def poll_once(self) -> frozenset[str] | None:
        """Read every change after the last one seen (and the holes); the changed ids, or
        None for "too many: reload everything"."""
        ids: set[str] | None = set()
        overflow = False
        while True:
            cond = _changes.c.seq > self.last_seq
            if self._holes:
                cond = or_(cond, _changes.c.seq.in_(sorted(self._holes)))
            async with self._store.engine.connect() as conn:
                rows = (await conn.execute(select(_changes.c.seq, _changes.c.client_id).where(cond)
                                           .order_by(_changes.c.seq).limit(PAGE))).all()
            self.stats["polls"] += 1
            now = time.monotonic()
            for seq, cid in rows:
                if seq in self._holes:
                    del self._holes[seq]
                elif seq > self.last_seq:
                    if seq > self.last_seq + 1:
                        if seq - self.last_seq - 1 + len(self._holes) > MAX_HOLES:
                            overflow = True
                        else:
                            self._holes.update(dict.fromkeys(range(self.last_seq + 1, seq), now))
                    self.last_seq = seq
                else:
                    continue  # a hole already given up on, or read twice
                self.stats["changes"] += 1
                if ids is not None:
                    ids.add(cid)
                    if len(ids) + self._since_reload > BULK:
                        ids = None
            if len(rows) < PAGE:
                break
        for seq in [s for s, t in self._holes.items() if now - t > HOLE_TIMEOUT]:
            del self._holes[seq]  # rolled back: it never comes
        if overflow:
            self._holes.clear()
            ids = None
        self._seen.append((now, self.last_seq))
        if ids is None:
            self._since_reload = 0
            return None
        self._since_reload += len(ids)
        return frozenset(ids)

    async def _prune(self) -> None:
        """Delete what this follower saw RETENTION s ago, in small batches (a SQLite write
        lock is held briefly; the call log keeps writing)."""
        now = time.monotonic()
        upto = None
        while self._seen and now - self._seen[0][0] > RETENTION:
            upto = self._seen.popleft()[1]
        if upto is None:
            return
        try:
            while True:
                async with self._store.engine.begin() as conn:
                    lo = await conn.scalar(select(func.min(_changes.c.seq)))
                    if lo is None or lo > upto:
                        return
                    await conn.execute(delete(_changes).where(_changes.c.seq <= min(upto, lo + PRUNE_BATCH)))
                await asyncio.sleep(0)
        except Exception as e:  # noqa: BLE001 - pruning waits for the next round
            throttled(log, "prune", logging.WARNING, "client change feed: pruning failed: %s", e)

    # ------------------------------------------------------------------ LISTEN (PostgreSQL)
    async def _listen_forever(self) -> None:
        import asyncpg

        dsn = make_url(self._store.url).set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.5
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5.0)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                self.listening = True
                backoff = 0.5
                self._wake.set()  # catch up on what happened while we were not listening
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), LISTEN_CHECK)
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), 5.0)  # a dead link raises
                raise ConnectionError("LISTEN connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep polling meanwhile, reconnect with backoff
                throttled(log, "listen", logging.WARNING, "client change feed: LISTEN lost (%s: %s); "
                          "polling every %.2f s until it is back", type(e).__name__, e, self._poll)
            finally:
                self.listening = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX)

    def _notified(self, *_args: Any) -> None:
        self.stats["notifications"] += 1
        self._wake.set()
