"""The one way anything is written to the database: a bounded queue drained in batches,
each batch saved with the same retry policy, and one place that decides what happens
to a batch the database would not take.

Used by the call-record writer (`callrouter.calllog.storing`) and by both decision logs
(`callrouter.decisionlog`); the spool (`callrouter.store.spool`) plugs into `on_failed`
and `backlog`, and its drain saves through `save_or_split`, so a replayed batch meets the
same policy.

- `offer(item)` never waits: when the queue is full the item is refused, counted
  (`stats["dropped"]`), logged (throttled) and handed to `on_failed`.
- `put(item)` waits for room (backpressure), for writers whose producer may wait.
- A batch is saved by `save(batch)`; on an error it is retried after `retry_min`,
  doubling up to `retry_max`, at most `attempts` times (None: until the writer is
  closed) - unless the database *refused* the data (`is_refusal`: a bad value, a
  constraint), which no retry changes.
- A refused batch is split (with `on_dead`): each item is saved alone, once; an item
  refused again is a dead letter (`on_dead(item, error)`, counted `dead`), the others
  are stored. One poison value never holds back the rest.
- A batch given up (retries spent, the database gone, the writer closing) is handed to
  `on_failed(batch, error)` and counted `failed`. The hook may return an awaitable (the
  spool's fsync runs in a thread): the writer awaits it before the next batch.
- `backlog()` true: older items of this kind wait elsewhere (the spool); the batch goes
  to `on_failed` untried (`Backlogged`, counted `backlogged`), so order is kept and a
  known outage costs no retries.
- `on_written(batch, True)` is told about every item stored (the decision log's child
  acknowledges through it and the two hooks).
- `close(timeout)` writes what is queued, within `timeout`; then a save in progress is
  abandoned (a hung connection must not hold the stop) and what is left is handed to
  `on_failed` (reason: "writer closed"), never silently dropped.
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


class Backlogged(Exception):
    """Older items of this kind wait in the spool: this batch goes after them, untried."""


# SQLSTATE classes that mean "not this data": 22 data exception (a NUL, a bad encoding, a
# value out of range), 23 integrity constraint, 54 program limit (a row too large).
_REFUSING_SQLSTATES = ("22", "23", "54")
ABANDON_WAIT = 0.5  # s: a save abandoned at close gets this long to clean up its connection


def is_refusal(error: BaseException) -> bool:
    """The database (or the driver, binding the values) said no to the data itself: the
    same rows would be refused again. Anything else (connection lost, timeout, lock,
    server gone) may pass on a later try."""
    from sqlalchemy import exc

    if isinstance(error, (ValueError, TypeError)):  # UnicodeEncodeError (a lone surrogate on SQLite) too
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return False
        if isinstance(error, (exc.DataError, exc.IntegrityError)):
            return True
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return isinstance(state, str) and state.startswith(_REFUSING_SQLSTATES)
    if isinstance(error, exc.StatementError):  # the values could not be bound
        return isinstance(error.orig, (ValueError, TypeError))
    return False


async def _attempt(save: Callable[[Sequence[T]], Awaitable[object]], batch: Sequence[T],
                   closing: asyncio.Event | None) -> None:
    """One save; abandoned when `closing` is set meanwhile (a black-holed connection
    would otherwise hold it until the driver's own timeout)."""
    if closing is None:
        await save(batch)
        return
    if closing.is_set():
        raise WriterClosed("writer closed")
    saving = asyncio.ensure_future(save(batch))
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait((saving, closed), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        saving.cancel()
        raise
    finally:
        closed.cancel()
    if saving.done():
        saving.result()  # its error, if any
        return
    saving.cancel()
    await asyncio.wait((saving,), timeout=ABANDON_WAIT)
    saving.add_done_callback(_consume)
    raise WriterClosed("writer closed during a save")


def _consume(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned save's error is not "never retrieved"


async def save_with_retry(save: Callable[[Sequence[T]], Awaitable[object]], batch: Sequence[T],
                          policy: WritePolicy, *, what: str, closing: asyncio.Event | None = None) -> Exception | None:
    """Save `batch` under `policy`; None when saved, else the last error (a refusal at
    once, else given up, or `closing` was set)."""
    delays = policy.delays()
    while True:
        try:
            await _attempt(save, batch, closing)
            return None
        except asyncio.CancelledError:
            raise
        except WriterClosed as e:
            return e
        except Exception as e:  # noqa: BLE001 - whatever the driver raises, the policy decides
            if is_refusal(e):
                return e
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


_ONCE = WritePolicy(attempts=1)


@dataclass(slots=True)
class SplitResult(Generic[T]):
    saved: list[T]
    dead: list[tuple[T, Exception]]
    left: list[T]                  # not tried, or the database went away: give them up
    error: Exception | None = None  # why `left` is left


async def save_or_split(save: Callable[[Sequence[T]], Awaitable[object]], batch: Sequence[T],
                        policy: WritePolicy, *, what: str, on_dead: Callable[[T, Exception], Awaitable[object]],
                        closing: asyncio.Event | None = None) -> SplitResult[T]:
    """Save `batch` under `policy`; if the database refuses it, each item alone (once):
    an item refused again goes to `on_dead` (a dead letter), the rest are saved. An error
    that is not a refusal (the database went away meanwhile), or an `on_dead` that fails,
    leaves that item and the ones after it in `left`. The one splitting policy: the
    writers and the spool's drain both use it."""
    error = await save_with_retry(save, batch, policy, what=what, closing=closing)
    if error is None:
        return SplitResult(list(batch), [], [])
    if not is_refusal(error):
        return SplitResult([], [], list(batch), error)
    result: SplitResult[T] = SplitResult([], [], [])
    for i, item in enumerate(batch):
        err = error if len(batch) == 1 else await save_with_retry(save, [item], _ONCE, what=what, closing=closing)
        if err is None:
            result.saved.append(item)
            continue
        if is_refusal(err):
            try:
                await on_dead(item, err)
            except Exception as e:  # noqa: BLE001 - the dead-letter store failed: the item waits like any other
                err = e
            else:
                result.dead.append((item, err))
                continue
        result.left, result.error = list(batch[i:]), err
        break
    return result


_STOP = object()


class BatchWriter(Generic[T]):
    def __init__(self, save: Callable[[Sequence[T]], Awaitable[object]], policy: WritePolicy = WritePolicy(), *,
                 what: str, maxsize: int = 10_000,
                 on_failed: Callable[[Sequence[T], Exception], Awaitable[object] | None] | None = None,
                 on_written: Callable[[Sequence[T], bool], None] | None = None,
                 on_dead: Callable[[T, Exception], Awaitable[object]] | None = None,
                 backlog: Callable[[], bool] | None = None,
                 describe: Callable[[T], str] = str):
        self._save = save
        self.policy = policy
        self.what = what
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self._on_failed = on_failed
        self._on_written = on_written
        self._on_dead = on_dead
        self._backlog = backlog
        self._describe = describe
        self._closing = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0
        self._hooks: set[asyncio.Future] = set()  # on_failed awaitables started where nothing can await them
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------ producers
    def offer(self, item: T) -> bool:
        if self._closing.is_set():
            self._give_up_nowait([item], WriterClosed("writer closed"))
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            throttled(log, f"full-{self.what}", logging.ERROR, "%s writer is full (%d queued): %s not queued",
                      self.what, self._queue.qsize(), self._describe(item))
            self._hook_nowait([item], OverflowError(f"{self.what} writer full"))
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
                self._give_up_nowait(left, WriterClosed("writer stopped"))
            if self._hooks:
                # the spool's write of what is left: it runs in a thread and completes even if
                # this task is cancelled again; waited for so that run() ends with it on disk
                await asyncio.wait(list(self._hooks))
            self._idle.set()

    async def _write(self, batch: list[T]) -> None:
        if self._backlog is not None and self._backlog():
            self.stats["backlogged"] += len(batch)
            await self._hook(batch, Backlogged(f"older {self.what}s wait in the spool"))
            return
        if self._on_dead is None:
            error = await save_with_retry(self._save, batch, self.policy, what=self.what, closing=self._closing)
            result: SplitResult[T] = SplitResult(batch, [], []) if error is None else SplitResult([], [], batch, error)
        else:
            result = await save_or_split(self._save, batch, self.policy, what=self.what, on_dead=self._dead,
                                         closing=self._closing)
        if result.saved:
            self.stats["saved"] += len(result.saved)
            self._notify(result.saved, True)
        if result.left:
            assert result.error is not None
            await self._give_up(result.left, result.error)

    async def _dead(self, item: T, error: Exception) -> None:
        assert self._on_dead is not None
        await self._on_dead(item, error)
        self.stats["dead"] += 1
        log.error("%s refused by the database twice, kept as a dead letter (%s: %s): %s", self.what,
                  type(error).__name__, str(error)[:200], self._describe(item))

    def _log_give_up(self, batch: Sequence[T], error: Exception) -> None:
        self.stats["failed"] += len(batch)
        names = ", ".join(self._describe(i) for i in batch[:20])
        more = " ..." if len(batch) > 20 else ""
        if self._on_failed is None:
            throttled(log, f"failed-{self.what}", logging.ERROR, "%d %s(s) not stored (%s: %s): %s%s", len(batch),
                      self.what, type(error).__name__, str(error)[:200], names, more)
        else:
            throttled(log, f"failed-{self.what}", logging.WARNING, "%d %s(s) not stored now (%s: %s), handed on: "
                      "%s%s", len(batch), self.what, type(error).__name__, str(error)[:200], names, more)

    async def _give_up(self, batch: Sequence[T], error: Exception) -> None:
        self._log_give_up(batch, error)
        await self._hook(batch, error)

    def _give_up_nowait(self, batch: Sequence[T], error: Exception) -> None:
        self._log_give_up(batch, error)
        self._hook_nowait(batch, error)

    async def _hook(self, batch: Sequence[T], error: Exception) -> None:
        if self._on_failed is None:
            return
        try:
            result = self._on_failed(batch, error)
            if result is not None:
                await result
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("%s writer: on_failed hook failed", self.what)

    def _hook_nowait(self, batch: Sequence[T], error: Exception) -> None:
        if self._on_failed is None:
            return
        try:
            result = self._on_failed(batch, error)
        except Exception:  # noqa: BLE001 - offer() never raises into its producer
            log.exception("%s writer: on_failed hook failed", self.what)
            return
        if result is not None:
            fut = asyncio.ensure_future(result)
            self._hooks.add(fut)
            fut.add_done_callback(self._hook_done)

    def _hook_done(self, fut: asyncio.Future) -> None:
        self._hooks.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("%s writer: on_failed hook failed: %s", self.what, fut.exception())

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
        if self._hooks:
            await asyncio.wait(list(self._hooks))

    async def close(self, timeout: float | None = None) -> None:
        """Let `run` write what is queued (within `timeout`, then stop retrying and
        abandon a save in progress) and end."""
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
