"""CallbackKeeper: finished calls -> callbacks opened and closed in the store.

A queued reporter on CallFinished (off the AMI path). The call's client is the record's
`client_id` (the router's, joined by the route log), else the one client whose phone is
the client side's number (the directory in memory, else the store); the owner comes from
the same client. `screenpop.callbacks.callback_action` decides, the store applies it in
call order, idempotently (a replayed record opens nothing twice). A batch the database
does not take is retried a few times, then given up (logged with the call ids): a
callback is a to-do, not the record of the call, which the record writer keeps safe.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from callrouter.calllog.reporters import QueuedReporter
from callrouter.routing.types import ClientInfo
from callrouter.store.writer import WritePolicy
from callrouter.tracker import CallFinished, Fact

from .callbacks import CloseBy, NewCallback, callback_action, client_number

log = logging.getLogger(__name__)


class CallbackKeeper(QueuedReporter):
    name = "callbacks"
    policy = WritePolicy(batch=200, retry_min=0.5, retry_max=5.0, attempts=5)

    def __init__(self, store: Any, directory: Any = None, *, desk: str = "desk", maxsize: int = 10_000):
        super().__init__(maxsize=maxsize)
        self._store = store
        self._directory = directory
        self._desk = desk

    def wants(self, fact: Fact) -> bool:
        return isinstance(fact, CallFinished)

    async def handle(self, facts: Sequence[Fact]) -> None:
        records = [f.record for f in facts if isinstance(f, CallFinished)
                   and f.record.direction != "internal" and f.record.outcome in ("answered", "missed", "abandoned")]
        # the clients the directory does not settle, from the store in one query for the
        # batch: a query per record costs a round trip (several turns of the event loop,
        # long ones while AMI events pour in) each, and the keeper fell behind by thousands
        ids = {r.client_id for r in records
               if r.client_id is not None and self._in_directory(r.client_id, client_number(r)) is None}
        fetched = await self._store.get_clients(sorted(ids)) if ids else {}
        actions: list[NewCallback | CloseBy] = []
        for r in records:
            client = await self._client(r.client_id, client_number(r), fetched)
            action = callback_action(r, client.id if client else None,
                                     client.owner_extension if client else None, self._desk)
            if action is not None:
                actions.append(action)
        if actions:
            opened, closed = await self._store.apply_callbacks(actions)
            self.stats["opened"] += opened
            self.stats["closed"] += closed

    def _in_directory(self, client_id: str, number: str | None) -> ClientInfo | None:
        """The client with this id among those the directory has for the number."""
        if self._directory is not None and number is not None:
            found = self._directory.lookup_now(number)
            if found is not None:
                return next((c for c in found.clients if c.id == client_id), None)
        return None

    async def _client(self, client_id: str | None, number: str | None,
                      fetched: Mapping[str, Any] | None = None) -> ClientInfo | None:
        if self._directory is not None and number is not None:
            found = self._directory.lookup_now(number)
            if found is not None:
                if client_id is None:
                    return found.client
                hit = next((c for c in found.clients if c.id == client_id), None)
                if hit is not None:
                    return hit
        if client_id is not None:
            if fetched is not None and client_id in fetched:
                c = fetched[client_id]
            elif fetched is not None:
                c = None  # asked for the batch: the store does not know it
            else:
                c = (await self._store.get_clients([client_id])).get(client_id)
            if c is not None:
                return ClientInfo.of(c)
            # a CLIENT_ID the store does not know: the one client with the number, if any
            if self._directory is not None and number is not None:
                found = self._directory.lookup_now(number)
                if found is not None:
                    return found.client
        if number is not None and (self._directory is None or not self._directory.ready):
            found = await self._store.clients_by_phone(number)
            return ClientInfo.of(found[0]) if len(found) == 1 else None
        return None
