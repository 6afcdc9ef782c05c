"""Reporters: consumers of call facts, one method per call-lifecycle fact.

The tracker says what happened; each reporter (store, screen-pop, webhook) decides what
to do with it. `dispatch` isolates them: one reporter failing never stops the others
or the tracker.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from callrouter.records import CallRecord
from callrouter.tracker import AgentAnswered, AgentEnded, AgentRinging, CallFinished, Fact

log = logging.getLogger(__name__)


class Reporter(Protocol):
    async def agent_ringing(self, fact: AgentRinging) -> None: ...
    async def agent_answered(self, fact: AgentAnswered) -> None: ...
    async def agent_ended(self, fact: AgentEnded) -> None: ...
    async def call_finished(self, record: CallRecord) -> None: ...


class NullReporter:
    """Ignores every fact; a reporter overrides the ones it cares about."""

    async def agent_ringing(self, fact: AgentRinging) -> None:
        pass

    async def agent_answered(self, fact: AgentAnswered) -> None:
        pass

    async def agent_ended(self, fact: AgentEnded) -> None:
        pass

    async def call_finished(self, record: CallRecord) -> None:
        pass


class RecordCollector(NullReporter):
    """Keeps every finished record in memory (replay, tests)."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    async def call_finished(self, record: CallRecord) -> None:
        self.records.append(record)


async def dispatch(fact: Fact, reporters: Sequence[Reporter]) -> None:
    for reporter in reporters:
        try:
            if isinstance(fact, CallFinished):
                await reporter.call_finished(fact.record)
            elif isinstance(fact, AgentRinging):
                await reporter.agent_ringing(fact)
            elif isinstance(fact, AgentAnswered):
                await reporter.agent_answered(fact)
            elif isinstance(fact, AgentEnded):
                await reporter.agent_ended(fact)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed on %s", type(reporter).__name__, type(fact).__name__)


class StoreWriter(NullReporter):
    """Writes finished call records to the store in batches, off the event path.

    The queue is bounded: when the database is slow, `call_finished` waits, which slows
    the tracker, which pauses reading the AMI socket — backpressure, not loss. A failed
    write is retried (the upsert is idempotent, keyed by (pbx, call_id)) until it lands
    or the writer is closed with records unsaved, which is logged loudly with their ids."""

    def __init__(self, store, *, max_pending: int = 10_000, batch: int = 500,
                 retry_min: float = 0.2, retry_max: float = 30.0):
        self._store = store
        self._queue: asyncio.Queue[CallRecord | None] = asyncio.Queue(max_pending)
        self._batch = batch
        self._retry = (retry_min, retry_max)
        self.saved = 0
        self.failures = 0

    async def call_finished(self, record: CallRecord) -> None:
        await self._queue.put(record)

    async def close(self) -> None:
        """Ask `run` to finish once everything queued so far is written."""
        await self._queue.put(None)

    async def run(self) -> None:
        done = False
        pending: list[CallRecord] = []
        try:
            while not done:
                item = await self._queue.get()
                if item is None:
                    done = True
                else:
                    pending.append(item)
                while len(pending) < self._batch and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        done = True
                    else:
                        pending.append(item)
                if pending:
                    await self._write(pending)
                    pending = []
        finally:
            lost = pending + [r for r in _drain(self._queue) if r is not None]
            if lost:
                log.error("store writer stopped with %d call record(s) unsaved: %s", len(lost),
                          ", ".join(f"{r.pbx}/{r.call_id}" for r in lost[:50]))

    async def _write(self, records: list[CallRecord]) -> None:
        delay = self._retry[0]
        while True:
            try:
                await self._store.save_calls(records)
                self.saved += len(records)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                log.warning("saving %d call record(s) failed (%s: %s); retrying in %.1fs",
                            len(records), type(e).__name__, str(e)[:200], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry[1])


def _drain(q: asyncio.Queue) -> list:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items
