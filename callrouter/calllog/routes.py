"""Joins the router's decisions to the call records the tracker finishes.

The FastAGI server learns a decision under the call's linkedid (agi_arg_1) and the AGI
channel's uniqueid; the tracker's CallFinished carries every uniqueid and linkedid the
call had. Whatever matches gives the record its `route` (rule, reason, dial, latency).
Keyed by (pbx, id): two PBXs may use the same uniqueids and linkedids, and a decision
joins only its own PBX's record (the FastAGI server names the PBX that asked).
Bounded: decisions for calls that never finish here (another daemon's PBX) age out.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callrouter.records import RouteInfo
from callrouter.tracker import CallFinished

if TYPE_CHECKING:
    from callrouter.routing.decision import RoutedCall

_MAX = 50_000


@dataclass(frozen=True, slots=True)
class LoggedRoute:
    route: RouteInfo
    client_id: str | None
    trace: tuple[str, ...] = ()   # the rules tried (the screen-pop says why the call came here)


class RouteLog:
    def __init__(self, max_entries: int = _MAX):
        self._by_id: OrderedDict[tuple[str, str], LoggedRoute] = OrderedDict()
        self._max = max_entries

    def add(self, call: RoutedCall) -> None:
        """FastAGI `on_decision` hook."""
        d = call.decision
        entry = LoggedRoute(RouteInfo(rule=d.rule or None, reason=d.reason or None, dial=d.dial or None,
                                      latency_ms=round(call.latency_ms, 3)), d.client_id, d.trace)
        for i in (call.linkedid, call.uniqueid):
            if i:
                key = (call.pbx, i)
                self._by_id[key] = entry
                self._by_id.move_to_end(key)
        while len(self._by_id) > self._max:
            self._by_id.popitem(last=False)

    def peek(self, pbx: str, call_id: str) -> LoggedRoute | None:
        """The decision for a call still in flight (its linkedid), left in place for `enrich`."""
        return self._by_id.get((pbx, call_id))

    def enrich(self, fact: CallFinished) -> CallFinished:
        r = fact.record
        keys = [(r.pbx, i) for i in sorted(fact.ids)]
        entry = next((self._by_id.pop(k) for k in keys if k in self._by_id), None)
        if entry is None:
            return fact
        for k in keys:
            self._by_id.pop(k, None)
        record = r.model_copy(update={"route": entry.route, "client_id": r.client_id or entry.client_id})
        return CallFinished(record, fact.ids)
