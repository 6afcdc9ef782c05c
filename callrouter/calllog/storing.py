"""RecordWriter: finished call records to the store, in batches, off the AMI path.

A queued reporter under the store's write policy (callrouter.store.writer; the upsert is
idempotent, keyed by (pbx, call_id)):
- a batch the database refuses is split, and a record refused alone becomes a dead letter
  (`dead_letters`), so one poison value never holds back the others;
- without a spool, a batch that fails otherwise is retried with backoff until it lands or
  the writer is closed; records still unsaved at the end are logged with their ids;
- with a spool (the daemon), a batch the database has not taken after a few tries goes to
  the spool (durable, fsynced), and while older records wait there new ones follow them
  untried; the spool's drain replays them in order when the database is back.
"""
from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

from callrouter.records import CallRecord
from callrouter.store.spool import RECORD, Spool, encode_record, record_dead_letter
from callrouter.store.writer import WritePolicy
from callrouter.tracker import CallFinished, Fact

from .reporters import QueuedReporter


class RecordStore(Protocol):
    async def save_calls(self, records: Sequence[CallRecord]) -> None: ...


class RecordWriter(QueuedReporter):
    name = "call record"
    policy = WritePolicy(batch=500, retry_min=0.2, retry_max=30.0, attempts=None)
    # with a spool: four tries in ~1.4 s, then the spool (the drain keeps trying)
    spooled_policy = WritePolicy(batch=500, retry_min=0.2, retry_max=1.0, attempts=4)

    def __init__(self, store: RecordStore, *, maxsize: int = 10_000, policy: WritePolicy | None = None,
                 spool: Spool | None = None):
        self._store = store
        self._spool = spool
        super().__init__(maxsize=maxsize, policy=policy or (self.spooled_policy if spool is not None else None),
                         on_dead=self._dead if hasattr(store, "save_dead_letters") else None,
                         backlog=(lambda: spool.has(RECORD)) if spool is not None else None)

    def wants(self, fact: Fact) -> bool:
        return isinstance(fact, CallFinished)

    async def handle(self, facts: Sequence[Fact]) -> None:
        await self._store.save_calls([f.record for f in facts if isinstance(f, CallFinished)])

    def failed(self, facts: Sequence[Fact], error: Exception) -> Awaitable[object] | None:
        if self._spool is None:
            return None
        return self._to_spool([f.record for f in facts if isinstance(f, CallFinished)])

    async def _to_spool(self, records: list[CallRecord]) -> None:
        assert self._spool is not None
        self.stats["spooled"] += await self._spool.aput(RECORD, [encode_record(r) for r in records])

    async def _dead(self, fact: Fact, error: Exception) -> None:
        assert isinstance(fact, CallFinished)
        await self._store.save_dead_letters([record_dead_letter(fact.record, error)])  # type: ignore[attr-defined]

    @property
    def saved(self) -> int:
        return self.stats["saved"]
