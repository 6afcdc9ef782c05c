"""PopBuilder: tracker facts -> `Pop`s -> the hub. A queued reporter, so building a card
never holds the AMI reader: the call log's `offer` only queues the fact.

The card comes from the phone directory in memory (name, turnover, tier, owner) and the
store (the last five calls, open callbacks) within `card_timeout`; a store that does not
answer in time (or fails) gives the card without its history, flagged
`card_status: "no-history"`: the pop must be on the screen while the phone rings.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from callrouter.calllog.reporters import QueuedReporter
from callrouter.calllog.routes import RouteLog
from callrouter.logthrottle import throttled
from callrouter.routing.types import ClientInfo
from callrouter.store.writer import WritePolicy
from callrouter.tracker import AgentAnswered, AgentEnded, AgentRinging, Fact

from .hub import PopHub
from .model import Card, CardStatus, OpenCallback, RecentCall, RouteWhy, is_agent_pop, make_pop

log = logging.getLogger(__name__)


class CardSource:
    def __init__(self, directory: Any, store: Any, routes: RouteLog | None, timeout: float):
        self._directory = directory
        self._store = store
        self._routes = routes
        self.timeout = timeout

    def route(self, call_id: str) -> tuple[RouteWhy | None, str | None]:
        logged = self._routes.peek(call_id) if self._routes is not None else None
        if logged is None:
            return None, None
        r = logged.route
        return RouteWhy(rule=r.rule, reason=r.reason, trace=list(logged.trace)), logged.client_id

    async def card(self, fact: AgentRinging, client_id: str | None) -> tuple[Card | None, CardStatus]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        info = self._from_memory(fact.caller.number, client_id)
        try:
            # the directory, once loaded, knows every client (changes reach it within a
            # second): only while it loads is the store asked for the client itself
            loading = self._directory is None or not self._directory.ready
            if info is None and client_id is not None and loading and self._store is not None:
                async with asyncio.timeout_at(deadline):
                    found = await self._store.get_clients([client_id])
                c = found.get(client_id)
                info = ClientInfo.of(c) if c is not None else None
            if info is None and client_id is not None:
                # a CLIENT_ID this store does not know (set by hand in the dialplan, a deleted
                # client): the one client with the number, if any
                info = self._from_memory(fact.caller.number, None)
            if info is None:
                return None, "no-client"
            if self._store is None:
                return _card(info), "no-history"
            async with asyncio.timeout_at(deadline):
                calls, callbacks = await self._store.pop_history(info.id)
        except TimeoutError:
            throttled(log, "card-timeout", logging.WARNING,
                      "screen-pop: the store did not give the card of %s within %.0f ms; popped without history",
                      client_id or fact.caller.number, self.timeout * 1000)
            return (_card(info), "no-history") if info is not None else (None, "no-client")
        except Exception as e:  # noqa: BLE001 - the pop goes out anyway
            throttled(log, "card-error", logging.WARNING, "screen-pop: card of %s failed: %s; popped without "
                      "history", client_id or fact.caller.number, e)
            return (_card(info), "no-history") if info is not None else (None, "no-client")
        recent = [RecentCall(call_id=c.call_id, started_at=c.started_at, direction=c.direction,  # type: ignore[arg-type]
                             outcome=c.outcome, agent=c.answered_by or c.final_agent) for c in calls]
        open_ = [OpenCallback(id=b.id, created_at=b.created_at, call_id=b.call_id, reason=b.reason,
                              assignee=b.assignee) for b in callbacks]
        return _card(info, recent, open_), "ok"

    def _from_memory(self, number: str | None, client_id: str | None) -> ClientInfo | None:
        if self._directory is None or number is None:
            return None
        found = self._directory.lookup_now(number)
        if found is None:
            return None
        if client_id is not None:
            return next((c for c in found.clients if c.id == client_id), None)
        return found.client  # exactly one client has the number, else None


def _card(info: ClientInfo, recent: list[RecentCall] | None = None,
          callbacks: list[OpenCallback] | None = None) -> Card:
    return Card(id=info.id, name=info.name, monthly_turnover=info.monthly_turnover, tier=info.tier,
                owner=info.owner_extension, recent_calls=recent or [], open_callbacks=callbacks or [])


class PopBuilder(QueuedReporter):
    name = "screen-pop"
    policy = WritePolicy(batch=50, attempts=1)

    def __init__(self, hub: PopHub, cards: CardSource, *, extensions: frozenset[str] = frozenset(),
                 maxsize: int = 2000):
        super().__init__(maxsize=maxsize)
        self.hub = hub
        self.cards = cards
        self._extensions = extensions

    def wants(self, fact: Fact) -> bool:
        return isinstance(fact, AgentRinging | AgentAnswered | AgentEnded) and is_agent_pop(fact, self._extensions)

    async def handle(self, facts: Sequence[Fact]) -> None:
        for fact in facts:
            try:
                await self._one(fact)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["errors"] += 1
                log.exception("screen-pop failed on %s", type(fact).__name__)

    async def _one(self, fact: Fact) -> None:
        if isinstance(fact, AgentEnded):
            self.hub.publish(make_pop(fact))
            return
        assert isinstance(fact, AgentRinging | AgentAnswered)
        route, routed_client = self.cards.route(fact.call_id)
        client_id = fact.client_id or routed_client
        if isinstance(fact, AgentAnswered):
            self.hub.publish(make_pop(fact))
            return
        card, status = await self.cards.card(fact, client_id)
        self.hub.publish(make_pop(fact, card=card, card_status=status, route=route))
