"""`InlineDecisionLog`: the route decision log written from the event loop.

A `callrouter.store.writer.BatchWriter` on the store under the decision logs' policy
(`policy.POLICY`): `submit` never blocks and never waits for the database; one bounded
queue, drained in batches, each batch (the decisions and the leads they created) one
`store.save_routing_batch` transaction. A full queue refuses the decision (counted
`dropped`, logged, throttled); a batch the store refuses `policy.attempts` times is given
up (counted `decision-failed`, logged) and handed to `on_failed` when one is given.
A batch the database refuses is split, a decision refused alone is a dead letter
(counted `dead`). With a `spool`, what is given up goes there (counted `spooled`), and
while older decisions wait there new ones follow them untried.
The daemon uses `DecisionLogProcess` (callrouter.decisionlog.process), which keeps this
work off the daemon's GIL; this one serves tests, tools and `agi.decision_log = "inline"`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from callrouter.decisionlog.policy import POLICY
from callrouter.routing.decision import RoutedCall
from callrouter.store.spool import DECISION, Spool, decision_dead_letter, encode_decision
from callrouter.store.writer import BatchWriter, WritePolicy


class DecisionStore(Protocol):
    async def save_routing_batch(self, calls: Sequence[RoutedCall]) -> int: ...


def describe(call: RoutedCall) -> str:
    return f"decision for {call.linkedid or call.uniqueid or '?'}"


class InlineDecisionLog:
    def __init__(self, store: DecisionStore, *, maxsize: int = 10_000, policy: WritePolicy = POLICY,
                 on_failed: Callable[[Sequence[RoutedCall], Exception], None] | None = None,
                 spool: Spool | None = None):
        self._store = store
        self._on_failed = on_failed
        self._spool = spool
        self._writer: BatchWriter[RoutedCall] = BatchWriter(
            self._save, policy, what="route decision", maxsize=maxsize, on_failed=self._failed,
            on_written=self._written, describe=describe,
            on_dead=self._dead if hasattr(store, "save_dead_letters") else None,
            backlog=(lambda: spool.has(DECISION)) if spool is not None else None)
        self.stats: Counter[str] = Counter()

    def submit(self, call: RoutedCall) -> bool:
        return self._writer.offer(call)

    @property
    def pending(self) -> int:
        """Decisions submitted and not yet stored or given up."""
        return self._writer.pending

    async def run(self) -> None:
        await self._writer.run()

    async def flush(self) -> None:
        """Wait until everything submitted so far is stored (or given up)."""
        await self._writer.flush()

    async def close(self, timeout: float = 5.0) -> None:
        """Store what is queued within `timeout` (the rest is given up), then `run` returns."""
        await self._writer.close(timeout)

    async def _save(self, calls: Sequence[RoutedCall]) -> None:
        await self._store.save_routing_batch(calls)

    def _written(self, calls: Sequence[RoutedCall], ok: bool) -> None:
        if ok:
            self.stats["decisions"] += len(calls)
            self.stats["leads"] += sum(1 for c in calls if c.lead() is not None)

    def _failed(self, calls: Sequence[RoutedCall], error: Exception) -> Awaitable[None] | None:
        if self._on_failed is not None:
            self._on_failed(calls, error)
        if self._spool is not None:
            return self._to_spool(calls, error)
        # a full queue (OverflowError) refused it; anything else: the store did not take it
        self.stats["dropped" if isinstance(error, OverflowError) else "decision-failed"] += len(calls)
        return None

    async def _to_spool(self, calls: Sequence[RoutedCall], error: Exception) -> None:
        assert self._spool is not None
        n = await self._spool.aput(DECISION, [encode_decision(c) for c in calls])
        self.stats["spooled"] += n
        self.stats["dropped" if isinstance(error, OverflowError) else "decision-failed"] += len(calls) - n

    async def _dead(self, call: RoutedCall, error: Exception) -> None:
        await self._store.save_dead_letters([decision_dead_letter(call, error)])  # type: ignore[attr-defined]
        self.stats["dead"] += 1
