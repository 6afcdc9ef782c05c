"""PopBuilder: tracker facts -> `Pop`s -> the hub. A queued reporter, so building a card
never holds the AMI reader: the call log's `offer` only queues the fact.

The card comes from the phone directory in memory (name, turnover, tier, owner) and the
store (the last five calls, open callbacks) within `card_timeout`; a store that does not
answer in time (or fails) gives the card without its history, flagged
`card_status: "no-history"`: the pop must be on the screen while the phone rings.

The store's part is asked for as soon as the router has decided (FastAGI `on_decision`,
`prefetch`, by the call's linkedid), a few milliseconds before Asterisk dials: by the time
the phone rings it is usually in hand (kept for that call, PREFETCH_TTL s, bounded). A call the router did not see (another
daemon routed it, a queue call) asks at ring time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
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

PREFETCH_TTL = 30.0        # s a prefetched history is good for (a call waiting in a queue asks again)
PREFETCH_MAX = 1000        # histories kept / asked for at once
PREFETCH_TIMEOUT = 5.0     # s for one prefetch query

History = tuple[list[Any], list[Any]]
CallKey = tuple[str, str]  # (pbx, call id): two PBXs may reuse the same linkedids


class CardSource:
    def __init__(self, directory: Any, store: Any, routes: RouteLog | None, timeout: float):
        self._directory = directory
        self._store = store
        self._routes = routes
        self.timeout = timeout
        self._wanted: asyncio.Queue[CallKey] = asyncio.Queue(PREFETCH_MAX)
        # (pbx, call id) -> (when asked, client id, the history to come)
        self._histories: OrderedDict[CallKey, tuple[float, str, asyncio.Future[History]]] = OrderedDict()
        self.stats: Counter[str] = Counter()   # history-prefetched, history-asked, card-late, card-failed

    # ---------------------------------------------------------------- prefetch
    def prefetch(self, call: CallKey, client_id: str | None) -> None:
        """The router decided this call for this client: fetch the client's history now
        (never waits). Kept for this call only (a ring group's pops share it; the next
        call, after this one is stored, asks again)."""
        if client_id is None or self._store is None or self._fresh(call, client_id) is not None:
            return
        try:
            self._wanted.put_nowait(call)
        except asyncio.QueueFull:
            return  # asked at ring time instead
        self._histories[call] = (time.monotonic(), client_id, asyncio.get_running_loop().create_future())
        self._histories.move_to_end(call)
        while len(self._histories) > PREFETCH_MAX:
            _, (_, _, fut) = self._histories.popitem(last=False)
            fut.cancel()

    def _fresh(self, call: CallKey, client_id: str) -> asyncio.Future[History] | None:
        entry = self._histories.get(call)
        if entry is None or entry[1] != client_id:
            return None
        if time.monotonic() - entry[0] > PREFETCH_TTL:
            del self._histories[call]
            entry[2].cancel()
            return None
        return entry[2]

    async def run_prefetcher(self) -> None:
        """The prefetch worker (a task of the builder's run)."""
        while True:
            call = await self._wanted.get()
            entry = self._histories.get(call)
            if entry is None or entry[2].done():
                continue
            _, client_id, fut = entry
            try:
                history = await asyncio.wait_for(self._store.pop_history(client_id), PREFETCH_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the ring-time path asks again
                self._histories.pop(call, None)
                fut.set_exception(e)
                fut.exception()  # retrieved: nobody may be waiting
                continue
            if not fut.done():
                fut.set_result(history)

    async def _history(self, call: CallKey, client_id: str) -> History:
        fut = self._fresh(call, client_id)
        if fut is not None:
            try:
                history = await asyncio.shield(fut)
                self.stats["history-prefetched"] += 1
                return history
            except asyncio.CancelledError:
                if fut.cancelled():  # evicted meanwhile: ask now
                    return await self._store.pop_history(client_id)
                raise
            except Exception:  # noqa: BLE001 - the prefetch failed: ask now
                pass
        self.stats["history-asked"] += 1
        return await self._store.pop_history(client_id)

    def route(self, pbx: str, call_id: str) -> tuple[RouteWhy | None, str | None]:
        logged = self._routes.peek(pbx, call_id) if self._routes is not None else None
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
                calls, callbacks = await self._history((fact.pbx, fact.call_id), info.id)
        except TimeoutError:
            self.stats["card-late"] += 1
            throttled(log, "card-timeout", logging.WARNING,
                      "screen-pop: the store did not give the card of %s within %.0f ms; popped without history",
                      client_id or fact.caller.number, self.timeout * 1000)
            return (_card(info), "no-history") if info is not None else (None, "no-client")
        except Exception as e:  # noqa: BLE001 - the pop goes out anyway
            self.stats["card-failed"] += 1
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

    def offer(self, fact: Fact) -> bool:
        """Queue the fact with the router's decision as it is now: by the time the queue
        gets to it the call may be over, and its decision joined to the record and gone."""
        if not self.wants(fact):
            return True
        if isinstance(fact, AgentRinging):
            return self._writer.offer(_Routed(fact, *self.cards.route(fact.pbx, fact.call_id)))  # type: ignore[arg-type]
        return self._writer.offer(fact)

    async def run(self) -> None:
        """The queued facts, and beside them the history prefetcher (ends with them)."""
        prefetching = asyncio.create_task(self.cards.run_prefetcher(), name="screen-pop-prefetch")
        try:
            await super().run()
        finally:
            prefetching.cancel()
            await asyncio.gather(prefetching, return_exceptions=True)

    async def handle(self, facts: Sequence[Fact]) -> None:
        for fact in facts:
            try:
                await self._one(fact)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["errors"] += 1
                log.exception("screen-pop failed on %s", type(fact).__name__)

    async def _one(self, item: Any) -> None:
        if not isinstance(item, _Routed):
            self.hub.publish(make_pop(item))
            return
        fact = item.fact
        card, status = await self.cards.card(fact, fact.client_id or item.client_id)
        self.hub.publish(make_pop(fact, card=card, card_status=status, route=item.route))


@dataclass(frozen=True, slots=True)
class _Routed:
    """A ringing fact and the router's decision for its call, taken when it was offered."""
    fact: AgentRinging
    route: RouteWhy | None
    client_id: str | None
