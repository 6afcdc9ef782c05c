"""The one way anything is written to the database: a bounded queue drained in batches,
each batch saved with the same retry policy, and one place that decides what happens
to a batch the database would not take.

Used by the call-record writer (`callrouter.calllog.storing`) and by both decision logs
(`callrouter.decisionlog`). The reliability work (a spool for what the database does
not take) plugs into `BatchWriter.on_failed`.

- `offer(item)` never waits: when the queue is full the item is refused, counted
  (`stats["dropped"]`) and logged (throttled); the caller decides what that means.
- `put(item)` waits for room (backpressure), for writers whose producer may wait.
- A batch is saved by `save(batch)`; on an error it is retried after `retry_min`,
  doubling up to `retry_max`, at most `attempts` times (None: until the writer is
  closed). A batch given up is handed to `on_failed(batch, error)` and counted.
- `on_written(batch, ok)` is told about every batch, saved or given up (the decision
  log's child acknowledges batches through it).
- `close(timeout)` writes what is queued, within `timeout`; what is left is handed to
  `on_failed` (reason: "writer closed") and counted, never silently dropped.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from callrouter.logthrottle import throttled

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WritePolicy:
    batch: int = 500             # items per save (one transaction)
    linger: float = 0.0          # after the first item, wait this long for more (a backlog is written at once)
    retry_min: float = 0.2       # first wait after a failed save (s)
    retry_max: float = 30.0      # longest wait between attempts (s)
    attempts: int | None = None  # saves tried per batch; None: until the writer is closed

    def delays(self):
        """The waits between attempts, in order (endless when attempts is None)."""
        delay = self.retry_min
        n = 1
        while self.attempts is None or n < self.attempts:
            yield delay
            delay = min(delay * 2, self.retry_max)
            n += 1


class WriterClosed(Exception):
    """The writer was closed with the batch unsaved."""


async def save_with_retry(save: Callable[[Sequence[T]], Awaitable[object]], batch: Sequence[T],
                          policy: WritePolicy, *, what: str, closing: asyncio.Event | None = None) -> Exception | None:
    """Save `batch` under `policy`; None when saved, else the last error (given up, or
    `closing` was set while waiting to retry)."""
    delays = policy.delays()
    while True:
        try:
            await save(batch)
            return None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the driver raises, the policy decides
            delay = next(delays, None)
            if delay is None or (closing is not None and closing.is_set()):
                return e
            throttled(log, f"retry-{what}", logging.WARNING, "saving %d %s(s) failed (%s: %s); retrying in %.1fs",
                      len(batch), what, type(e).__name__, str(e)[:200], delay)
            if closing is None:
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(closing.wait(), delay)
                except TimeoutError:
                    pass
                if closing.is_set():
                    return WriterClosed(f"writer closed while retrying after {type(e).__name__}: {e}")


_STOP = object()


class BatchWriter(Generic[T]):
    def __init__(self, save: Callable[[Sequence[T]], Awaitable[object]], policy: WritePolicy = WritePolicy(), *,
                 what: str, maxsize: int = 10_000,
                 on_failed: Callable[[Sequence[T], Exception], None] | None = None,
                 on_written: Callable[[Sequence[T], bool], None] | None = None,
                 describe: Callable[[T], str] = str):
        self._save = save
        self.policy = policy
        self.what = what
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self._on_failed = on_failed
        self._on_written = on_written
        self._describe = describe
        self._closing = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------ producers
    def offer(self, item: T) -> bool:
        if self._closing.is_set():
            self._give_up([item], WriterClosed("writer closed"))
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            throttled(log, f"full-{self.what}", logging.ERROR, "%s writer is full (%d queued): %s not stored",
                      self.what, self._queue.qsize(), self._describe(item))
            if self._on_failed is not None:
                try:
                    self._on_failed([item], OverflowError(f"{self.what} writer full"))
                except Exception:  # noqa: BLE001 - offer() never raises into its producer
                    log.exception("%s writer: on_failed hook failed", self.what)
            return False
        self._idle.clear()
        return True

    async def put(self, item: T) -> None:
        self._idle.clear()
        await self._queue.put(item)

    @property
    def pending(self) -> int:
        return self._queue.qsize() + self._busy

    # ------------------------------------------------------------ the writer task
    async def run(self) -> None:
        q = self._queue
        batch: list = []
        try:
            while not self._closing.is_set():  # closed with items left (timeout): given up below
                first = await q.get()
                if first is _STOP:
                    return
                batch = [first]
                self._busy = 1  # taken from the queue, not yet saved: still pending for flush()
                if self.policy.linger > 0 and q.qsize() < self.policy.batch - 1:
                    await asyncio.sleep(self.policy.linger)
                stop = False
                while len(batch) < self.policy.batch and not q.empty():
                    item = q.get_nowait()
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                self._busy = len(batch)
                await self._write(batch)
                batch = []
                self._busy = 0
                if q.empty():
                    self._idle.set()
                if stop:
                    return
        finally:
            self._busy = 0
            left = batch + [i for i in _drain(q) if i is not _STOP]  # a batch in hand when cancelled, too
            if left:
                self._give_up(left, WriterClosed("writer stopped"))
            self._idle.set()

    async def _write(self, batch: list[T]) -> None:
        error = await save_with_retry(self._save, batch, self.policy, what=self.what, closing=self._closing)
        if error is None:
            self.stats["saved"] += len(batch)
            self._notify(batch, True)
        else:
            self._give_up(batch, error)
            self._notify(batch, False)

    def _give_up(self, batch: Sequence[T], error: Exception) -> None:
        self.stats["failed"] += len(batch)
        names = ", ".join(self._describe(i) for i in batch[:20])
        throttled(log, f"failed-{self.what}", logging.ERROR, "%d %s(s) not stored (%s: %s): %s%s", len(batch),
                  self.what, type(error).__name__, str(error)[:200], names, " ..." if len(batch) > 20 else "")
        if self._on_failed is not None:
            try:
                self._on_failed(batch, error)
            except Exception:  # noqa: BLE001
                log.exception("%s writer: on_failed hook failed", self.what)

    def _notify(self, batch: Sequence[T], ok: bool) -> None:
        if self._on_written is not None:
            try:
                self._on_written(batch, ok)
            except Exception:  # noqa: BLE001
                log.exception("%s writer: on_written hook failed", self.what)

    # ------------------------------------------------------------ lifecycle
    async def flush(self) -> None:
        """Wait until everything queued so far is saved or given up."""
        while self._queue.qsize() or self._busy:
            self._idle.clear()
            await self._idle.wait()

    async def close(self, timeout: float | None = None) -> None:
        """Let `run` write what is queued (within `timeout`, then stop retrying) and end."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        queued = False
        try:
            await asyncio.wait_for(self._queue.put(_STOP), timeout)
            queued = True
            await asyncio.wait_for(self.flush(), None if end is None else max(0.0, end - loop.time()))
        except TimeoutError:
            pass
        self._closing.set()  # run() gives up what is left and returns
        if not queued:
            try:
                self._queue.put_nowait(_STOP)  # wakes a run() waiting on an empty queue
            except asyncio.QueueFull:
                pass  # run() is not waiting: it sees _closing on its next batch


def _drain(q: asyncio.Queue) -> list:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items
