"""One routing decision, from the router to the store (pure: stdlib only).

- `RouteDecision`: what the rules decided for a caller (the FastAGI variables, the
  reason, the trace), and where it came from (`rules_version`, `lookup`).
  `engine.decide` makes it; `Router.route`/`route_now` return it.
- `RoutedCall`: one routing answer for one call - the decision plus the call it was
  for and how the answer went. The FastAGI server hands it to the decision log and to
  `on_decision` hooks; the decision log pickles it to its child process; the store
  writes it (`store.routing`) as a `route_decisions` row and, for an unknown caller,
  a lead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any


@dataclass(frozen=True, slots=True)
class RouteDecision:
    rule: str                      # the rule that matched ("" = none: the default route)
    reason: str                    # ROUTE_REASON: owner, tier:wholesale, owner-unavailable→tier:retail ...
    dial: str                      # ROUTE_DIAL
    timeout: int                   # ROUTE_TIMEOUT (seconds)
    fallback: str = ""             # ROUTE_FALLBACK ("" = none)
    client_id: str | None = None   # CLIENT_ID
    client_name: str = ""          # CLIENT_NAME (sanitized)
    caller: str | None = None      # E.164 or None (no caller ID)
    lead: bool = False             # a caller with a number and no client: record a lead
    candidates: tuple[str, ...] = ()  # client ids when the phone is on several clients
    owner: str | None = None       # the client's owner extension, whether or not it was dialled
    trace: tuple[str, ...] = ()
    rules_version: int | None = None  # the RuleSet version that decided (None: not by the router)
    lookup: str | None = None      # where the clients came from: "index", "store", "" (None: not by the router)

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1

    def variables(self) -> list[tuple[str, str]]:
        """The channel variables of the FastAGI contract, in the order they are set."""
        return [
            ("ROUTE_DIAL", self.dial),
            ("ROUTE_TIMEOUT", str(self.timeout)),
            ("ROUTE_FALLBACK", self.fallback),
            ("CLIENT_ID", self.client_id or ""),
            ("CLIENT_NAME", self.client_name),
            ("ROUTE_REASON", self.reason),
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `rules_version` and `lookup` only when known (`callrouter route`
        decides without a RuleSet or a directory)."""
        d = asdict(self)
        d["trace"] = list(self.trace)
        d["candidates"] = list(self.candidates)
        for k in ("rules_version", "lookup"):
            if d[k] is None:
                del d[k]
        return d


@dataclass(frozen=True, slots=True)
class RoutedCall:
    """One routing answer for one call, as the FastAGI server answered it."""
    pbx: str
    linkedid: str                # agi_arg_1, else the AGI channel's uniqueid ("" when neither is an id)
    uniqueid: str
    channel: str
    caller_raw: str | None
    decision: RouteDecision      # default_decision(...) when the default route was answered
    decided_at: datetime         # timezone-aware
    latency_ms: float            # connection accepted -> first SET VARIABLE written
    answer_ms: float             # ... -> last reply read
    outcome: str                 # answered | hangup | peer-gone | reply-timeout

    def __post_init__(self) -> None:
        if self.decided_at.tzinfo is None:
            raise ValueError("decided_at must be timezone-aware")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # plain values: the answer path pickles every call for the decision log's child
        # process, and a nested dataclass with a datetime pickles several times slower
        d = self.decision
        at = self.decided_at
        off = at.utcoffset()
        return (_routed_call, (self.pbx, self.linkedid, self.uniqueid, self.channel, self.caller_raw,
                               at.timestamp(), off.days * 86400 + off.seconds if off else 0,  # type: ignore[union-attr]
                               self.latency_ms, self.answer_ms, self.outcome,
                               (d.rule, d.reason, d.dial, d.timeout, d.fallback, d.client_id, d.client_name,
                                d.caller, d.lead, d.candidates, d.owner, d.trace, d.rules_version, d.lookup)))

    def call_id(self) -> str | None:
        """The call this answer was for: the linkedid, else the AGI channel's uniqueid."""
        return self.linkedid or self.uniqueid or None

    def lead(self) -> tuple[str, str, str | None, str | None] | None:
        """(pbx, phone, raw, call_id) for an unknown caller with a number, else None."""
        d = self.decision
        if d.lead and d.caller:
            return (self.pbx, d.caller, self.caller_raw, self.call_id())
        return None

    def trace(self) -> dict[str, Any]:
        """The `route_decisions.trace` JSON: the rules' steps and what else the answer was."""
        d = self.decision
        return {"steps": list(d.trace), "candidates": list(d.candidates), "lead": d.lead, "owner": d.owner,
                "client_name": d.client_name, "uniqueid": self.uniqueid, "channel": self.channel,
                "outcome": self.outcome, "answer_ms": round(self.answer_ms, 3),
                "rules_version": d.rules_version, "lookup": d.lookup}


_OFFSETS: dict[int, Any] = {0: UTC}


def _routed_call(pbx: str, linkedid: str, uniqueid: str, channel: str, caller_raw: str | None, ts: float,
                 offset_s: int, latency_ms: float, answer_ms: float, outcome: str,
                 decision: tuple[Any, ...]) -> RoutedCall:
    tz = _OFFSETS.get(offset_s)
    if tz is None:
        tz = _OFFSETS.setdefault(offset_s, timezone(timedelta(seconds=offset_s)))
    return RoutedCall(pbx, linkedid, uniqueid, channel, caller_raw, RouteDecision(*decision),
                      datetime.fromtimestamp(ts, tz), latency_ms, answer_ms, outcome)
