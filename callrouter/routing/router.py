"""Router: one call's raw caller ID and time -> RouteDecision, from the live pieces
(running rules, phone lookup, presence, manager devices). The FastAGI server uses it;
the decision itself is `engine.decide` (pure), which `callrouter route` calls directly.
The decision carries the rules version and the lookup's source it was made with."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from callrouter.phone import DEFAULT_REGION, normalize
from callrouter.routing.decision import RouteDecision
from callrouter.routing.engine import PresenceView, decide
from callrouter.routing.lookup import Lookup
from callrouter.routing.rules import RuleSet
from callrouter.routing.types import LookupResult


class Router:
    def __init__(self, rules: RuleSet, lookup: Lookup, presence: PresenceView | None = None, *,
                 region: str = DEFAULT_REGION, devices: Mapping[str, Sequence[str]] | None = None,
                 default_dial: str = "Local/support@queues", default_timeout: int = 20):
        self.rules = rules
        self.lookup = lookup
        self.presence = presence
        self.region = region
        self.devices = dict(devices or {})
        self.default_dial = default_dial
        self.default_timeout = default_timeout

    def normalize(self, raw_caller: str | None) -> str | None:
        return normalize(raw_caller, self.region)

    def decide(self, raw_caller: str | None, caller: str | None, found: LookupResult,
               now: datetime) -> RouteDecision:
        ruleset = self.rules
        return decide(caller, found.clients, self.presence, now, ruleset.current, devices=self.devices,
                      raw_caller=raw_caller, default_dial=self.default_dial,
                      default_timeout=self.default_timeout, rules_version=ruleset.version, lookup=found.source)

    def route_now(self, raw_caller: str | None, now: datetime) -> RouteDecision | None:
        """From memory only; None when the lookup needs the store (then use `route`)."""
        caller = self.normalize(raw_caller)
        found = self.lookup.lookup_now(caller)
        if found is None:
            return None
        return self.decide(raw_caller, caller, found, now)

    async def route(self, raw_caller: str | None, now: datetime) -> RouteDecision:
        caller = self.normalize(raw_caller)
        found = self.lookup.lookup_now(caller)
        if found is None:
            found = await self.lookup.lookup(caller)
        return self.decide(raw_caller, caller, found, now)
