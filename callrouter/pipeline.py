"""Source -> tracker -> reporters, for one PBX. The same loop serves the daemon and tests."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from callrouter.ami.events import AmiEvent
from callrouter.tracker import Tracker

from .reporters import Reporter, dispatch

# a call with no event for this long lost its hangups (outage): report it incomplete
IDLE_CALL_SECONDS = 6 * 3600.0
_EXPIRE_EVERY = 10_000  # events

log = logging.getLogger(__name__)


async def track(events: AsyncIterator[AmiEvent], tracker: Tracker, reporters: Sequence[Reporter]) -> None:
    """Reduce every event of the source; hand each resulting fact to the reporters."""
    n = 0
    failures = 0
    async for event in events:
        try:
            facts = tracker.feed(event)
        except Exception:
            # a tracker bug on one event must not stop the call log of the whole PBX
            failures += 1
            if failures <= 100 or failures % 1000 == 0:
                log.exception("tracker failed on %s (%d so far); event skipped", type(event).__name__, failures)
            continue
        for fact in facts:
            await dispatch(fact, reporters)
        n += 1
        if n % _EXPIRE_EVERY == 0 and event.time is not None:
            for fact in tracker.expire(event.time, IDLE_CALL_SECONDS):
                await dispatch(fact, reporters)


async def flush(tracker: Tracker, reporters: Sequence[Reporter], reason: str) -> None:
    """Calls still in flight become incomplete records: persisted, not dropped."""
    for fact in tracker.close(reason):
        await dispatch(fact, reporters)
