"""Reporters: consumers of call facts, one method per call-lifecycle fact.

The tracker says what happened; each reporter (store, screen-pop, webhook) decides what
to do with it. The call log hands a fact to every reporter with `offer`, which never
waits: a `QueuedReporter` keeps its own bounded queue and task, and a full queue drops
the fact (counted, logged), so one slow consumer never stalls the tracker, presence or
the other reporters.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from callrouter.records import CallRecord
from callrouter.store.writer import BatchWriter, WritePolicy
from callrouter.tracker import AgentAnswered, AgentEnded, AgentRinging, CallFinished, Fact

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """One method per fact; what the call log calls is `offer`."""

    def offer(self, fact: Fact) -> bool: ...


class QueuedReporter:
    """Base of every reporter: `offer` queues the fact (bounded; a full queue drops it,
    counted in `stats["dropped"]`); `run` (a task the daemon owns) hands the facts to
    the per-fact methods, in batches for `handle` overrides that want them (the store).

    Subclasses override the methods for the facts they care about, and `wants` to keep
    uninteresting facts out of the queue. A method that raises is logged and counted;
    the reporter goes on. `policy` is the store's write policy: by default a failed
    fact is not retried."""

    name = "reporter"
    policy = WritePolicy(batch=100, attempts=1)

    def __init__(self, *, maxsize: int = 10_000, policy: WritePolicy | None = None,
                 on_dead: Callable[[Fact, Exception], Awaitable[object]] | None = None,
                 backlog: Callable[[], bool] | None = None):
        # on_dead, backlog: the write policy's split/dead-letter and spool hooks (store.writer)
        self._writer: BatchWriter[Fact] = BatchWriter(self.handle, policy or self.policy, what=self.name,
                                                      maxsize=maxsize, on_failed=self.failed, on_dead=on_dead,
                                                      backlog=backlog, describe=_describe)

    # ---------------------------------------------------------------- the call log's side
    def wants(self, fact: Fact) -> bool:
        return True

    def offer(self, fact: Fact) -> bool:
        if not self.wants(fact):
            return True
        return self._writer.offer(fact)

    # ---------------------------------------------------------------- per fact
    async def agent_ringing(self, fact: AgentRinging) -> None:
        pass

    async def agent_answered(self, fact: AgentAnswered) -> None:
        pass

    async def agent_ended(self, fact: AgentEnded) -> None:
        pass

    async def call_finished(self, record: CallRecord) -> None:
        pass

    async def handle(self, facts: Sequence[Fact]) -> None:
        """A batch of queued facts, in order. Errors of one fact are logged and counted
        here; override (as the store writer does) to take a batch in one go."""
        for fact in facts:
            try:
                if isinstance(fact, CallFinished):
                    await self.call_finished(fact.record)
                elif isinstance(fact, AgentRinging):
                    await self.agent_ringing(fact)
                elif isinstance(fact, AgentAnswered):
                    await self.agent_answered(fact)
                elif isinstance(fact, AgentEnded):
                    await self.agent_ended(fact)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._writer.stats["errors"] += 1
                log.exception("%s failed on %s", self.name, type(fact).__name__)

    def failed(self, facts: Sequence[Fact], error: Exception) -> Awaitable[object] | None:
        """Facts given up (queue full, retries spent, closed): already counted and logged.
        May return an awaitable (the store writer's spool): the writer awaits it."""
        return None

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        await self._writer.run()

    async def flush(self) -> None:
        await self._writer.flush()

    async def close(self, timeout: float | None = 10.0) -> None:
        await self._writer.close(timeout)

    @property
    def depth(self) -> int:
        return self._writer.pending

    @property
    def stats(self) -> Counter[str]:
        return self._writer.stats


class RecordCollector:
    """Keeps every finished record in memory, synchronously (replay, tests)."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.facts: list[Fact] = []

    def offer(self, fact: Fact) -> bool:
        self.facts.append(fact)
        if isinstance(fact, CallFinished):
            self.records.append(fact.record)
        return True


def _describe(fact: Fact) -> str:
    if isinstance(fact, CallFinished):
        return f"{fact.record.pbx}/{fact.record.call_id}"
    return f"{type(fact).__name__} {getattr(fact, 'pbx', '')}/{getattr(fact, 'call_id', '')}"
