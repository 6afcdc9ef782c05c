"""Source -> tracker -> reporters, for one PBX. The same loop serves the daemon and tests."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

from callrouter.ami.events import AmiEvent
from callrouter.tracker import CallFinished, Fact, Tracker

from .reporters import Reporter, dispatch

# a call with no event for this long lost its hangups (outage): report it incomplete
IDLE_CALL_SECONDS = 6 * 3600.0
_EXPIRE_EVERY = 10_000  # events

log = logging.getLogger(__name__)


async def track(events: AsyncIterator[AmiEvent], tracker: Tracker, reporters: Sequence[Reporter], *,
                observe: Callable[[AmiEvent], None] | None = None,
                enrich: Callable[[CallFinished], CallFinished] | None = None) -> None:
    """Reduce every event of the source; hand each resulting fact to the reporters.
    `observe` sees every event too (presence); `enrich` may complete a finished record
    from what other parts of the daemon know (the router's decision)."""
    n = 0
    failures = 0
    async for event in events:
        try:
            if observe is not None:
                observe(event)
            facts = tracker.feed(event)
        except Exception:
            # a tracker bug on one event must not stop the call log of the whole PBX
            failures += 1
            if failures <= 100 or failures % 1000 == 0:
                log.exception("tracker failed on %s (%d so far); event skipped", type(event).__name__, failures)
            continue
        for fact in facts:
            await dispatch(_enriched(fact, enrich), reporters)
        n += 1
        if n % _EXPIRE_EVERY == 0 and event.time is not None:
            for fact in tracker.expire(event.time, IDLE_CALL_SECONDS):
                await dispatch(_enriched(fact, enrich), reporters)


async def flush(tracker: Tracker, reporters: Sequence[Reporter], reason: str,
                enrich: Callable[[CallFinished], CallFinished] | None = None) -> None:
    """Calls still in flight become incomplete records: persisted, not dropped."""
    for fact in tracker.close(reason):
        await dispatch(_enriched(fact, enrich), reporters)


def _enriched(fact: Fact, enrich: Callable[[CallFinished], CallFinished] | None) -> Fact:
    if enrich is None or not isinstance(fact, CallFinished):
        return fact
    try:
        return enrich(fact)
    except Exception:
        log.exception("enriching call %s failed; stored as the tracker made it", fact.record.call_id)
        return fact
