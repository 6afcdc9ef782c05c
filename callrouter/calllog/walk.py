"""The walk of the call log, one event at a time, for one PBX:

    AMI event -> observers (presence) -> tracker -> facts -> enrich (router's decision)
              -> every reporter's `offer`

`CallLog.feed` is that walk and returns the facts too. The same walk serves the daemon
(`follow`, over a live AMI source) and captures (`replay`, used by `callrouter replay`
and by the tests), so there is one way an event becomes a record.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

from callrouter.ami.events import AmiEvent
from callrouter.devices import DeviceMap
from callrouter.phone import DEFAULT_REGION
from callrouter.records import CallRecord
from callrouter.tracker import CallFinished, Fact, Tracker

from .reporters import Reporter

# a call with no event for this long lost its hangups (outage): report it incomplete
IDLE_CALL_SECONDS = 6 * 3600.0
_EXPIRE_EVERY = 10_000  # events
# `follow` lets the event loop run other callbacks once it has walked for SLICE_SECONDS
# (or YIELD_EVERY events, whichever comes first): a queue full of AMI events (a burst)
# would otherwise be walked in one go, holding up FastAGI answers. An event costs ~0.1 ms
# of the walk, so 32 events held the loop ~3 ms at a time; 0.5 ms keeps each FastAGI
# step's wait behind the walk short.
YIELD_EVERY = 32
SLICE_SECONDS = 0.0005
_clock = time.perf_counter
CAPTURE_ENDED = "capture ended with the call in progress"

log = logging.getLogger(__name__)


class CallLog:
    """One PBX's call log: its tracker, who else sees each event, who gets each fact."""

    def __init__(self, tracker: Tracker, reporters: Sequence[Reporter] = (), *,
                 observers: Sequence[Callable[[AmiEvent], None]] = (),
                 enrich: Callable[[CallFinished], CallFinished] | None = None):
        self.tracker = tracker
        self.reporters = tuple(reporters)
        self.observers = tuple(observers)
        self.enrich = enrich
        self.stats: Counter[str] = Counter()

    @property
    def pbx(self) -> str:
        return self.tracker.pbx

    def feed(self, event: AmiEvent) -> list[Fact]:
        """The walk of one event; never raises (a bug on one event must not stop the PBX's log)."""
        self.stats["events"] += 1
        for observe in self.observers:
            try:
                observe(event)
            except Exception:
                self._failed("observer", event)
        try:
            facts = self.tracker.feed(event)
        except Exception:
            self._failed("tracker", event)
            return []
        facts = self._publish(facts)
        if self.stats["events"] % _EXPIRE_EVERY == 0 and event.time is not None:
            facts += self.expire(event.time)
        return facts

    def expire(self, now: float, idle_seconds: float = IDLE_CALL_SECONDS) -> list[Fact]:
        return self._publish(self.tracker.expire(now, idle_seconds))

    def close(self, reason: str) -> list[Fact]:
        """Calls still in flight become incomplete records: published, not dropped."""
        return self._publish(self.tracker.close(reason))

    def _publish(self, facts: list[Fact]) -> list[Fact]:
        out = []
        for fact in facts:
            fact = self._enriched(fact)
            out.append(fact)
            if isinstance(fact, CallFinished):
                self.stats["calls"] += 1
            for reporter in self.reporters:
                try:
                    reporter.offer(fact)
                except Exception:
                    self.stats["reporter-errors"] += 1
                    log.exception("%s: %s refused %s", self.pbx, type(reporter).__name__, type(fact).__name__)
        return out

    def _enriched(self, fact: Fact) -> Fact:
        if self.enrich is None or not isinstance(fact, CallFinished):
            return fact
        try:
            return self.enrich(fact)
        except Exception:
            log.exception("enriching call %s failed; stored as the tracker made it", fact.record.call_id)
            return fact

    def _failed(self, what: str, event: AmiEvent) -> None:
        n = self.stats[f"{what}-errors"] = self.stats[f"{what}-errors"] + 1
        if n <= 100 or n % 1000 == 0:
            log.exception("%s: %s failed on %s (%d so far); event skipped", self.pbx, what,
                          type(event).__name__, n)


async def follow(events: AsyncIterator[AmiEvent], calllog: CallLog, yield_every: int | None = None,
                 slice_seconds: float | None = None) -> None:
    """Walk every event of a live source until it ends. Once it has walked for
    `slice_seconds` (default SLICE_SECONDS) or `yield_every` events (default YIELD_EVERY)
    without the event loop running anything else, it yields to the loop
    (`asyncio.Queue.get` does not while the queue holds items), so a burst never holds
    the loop for much longer than one slice."""
    yield_every = yield_every or YIELD_EVERY
    slice_s = slice_seconds or SLICE_SECONDS
    clock = _clock
    n = 0
    start = clock()
    async for event in events:
        if n == 0:
            start = clock()  # the slice begins with its first event (a wait for events is no walk)
        calllog.feed(event)
        n += 1
        if n >= yield_every or clock() - start >= slice_s:
            n = 0
            await asyncio.sleep(0)


def replay(events: Iterable[AmiEvent], calllog: CallLog, end_reason: str = CAPTURE_ENDED) -> Iterator[Fact]:
    """Walk a capture; at its end, calls still open become incomplete records."""
    for event in events:
        yield from calllog.feed(event)
    yield from calllog.close(end_reason)


def replay_records(events: Iterable[AmiEvent], pbx: str = "main", devices: DeviceMap | None = None,
                   region: str = DEFAULT_REGION) -> list[CallRecord]:
    """Every call record of a capture, in the order the calls finished."""
    return [f.record for f in replay(events, CallLog(Tracker(pbx, devices, region)))
            if isinstance(f, CallFinished)]
