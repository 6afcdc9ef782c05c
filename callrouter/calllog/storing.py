"""RecordWriter: finished call records to the store, in batches, off the AMI path.

A queued reporter under the store's write policy: a batch that fails is retried with
backoff until it lands or the writer is closed (the upsert is idempotent, keyed by
(pbx, call_id)); records still unsaved at the end are logged with their ids.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from callrouter.records import CallRecord
from callrouter.store.writer import WritePolicy
from callrouter.tracker import CallFinished, Fact

from .reporters import QueuedReporter


class RecordStore(Protocol):
    async def save_calls(self, records: Sequence[CallRecord]) -> None: ...


class RecordWriter(QueuedReporter):
    name = "call record"
    policy = WritePolicy(batch=500, retry_min=0.2, retry_max=30.0, attempts=None)

    def __init__(self, store: RecordStore, *, maxsize: int = 10_000, policy: WritePolicy | None = None):
        super().__init__(maxsize=maxsize, policy=policy)
        self._store = store

    def wants(self, fact: Fact) -> bool:
        return isinstance(fact, CallFinished)

    async def handle(self, facts: Sequence[Fact]) -> None:
        await self._store.save_calls([f.record for f in facts if isinstance(f, CallFinished)])

    @property
    def saved(self) -> int:
        return self.stats["saved"]
