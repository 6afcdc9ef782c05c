"""The call log keeps going when one event, one observer or one reporter goes wrong, and
a slow reporter never holds up the walk."""
import asyncio
from pathlib import Path

from callrouter.ami.capture import read_events
from callrouter.calllog.reporters import QueuedReporter, RecordCollector
from callrouter.calllog.walk import CallLog, follow, replay
from callrouter.tracker import CallFinished, Tracker

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"


class Broken(QueuedReporter):
    name = "broken"

    async def agent_ringing(self, fact):
        raise RuntimeError("screen-pop service down")

    async def call_finished(self, record):
        raise RuntimeError("webhook down")


class Refusing:
    def offer(self, fact):
        raise RuntimeError("cannot even queue")


class Stalled(QueuedReporter):
    """A consumer that never finishes handling its first fact."""
    name = "stalled"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.started = asyncio.Event()

    def wants(self, fact):
        return isinstance(fact, CallFinished)

    async def call_finished(self, record):
        self.started.set()
        await asyncio.Event().wait()


class TrackerFailingOnce(Tracker):
    """Fault injection: the first BridgeEnter blows up inside the reducer."""
    failed = False

    def feed(self, event):
        if type(event).__name__ == "BridgeEnter" and not self.failed:
            self.failed = True
            raise KeyError("bug")
        return super().feed(event)


async def _events(path):
    for e in read_events(path):
        yield e


async def _socket_like(path):
    """Events as a live source gives them: the loop runs between reads."""
    for e in read_events(path):
        await asyncio.sleep(0)
        yield e


async def test_a_failing_reporter_does_not_stop_the_others(caplog):
    good, broken = RecordCollector(), Broken()
    running = asyncio.create_task(broken.run())
    calllog = CallLog(Tracker(), [broken, Refusing(), good])
    await follow(_events(RECORDINGS / "burst.ami.jsonl"), calllog)
    calllog.close("end")
    await broken.close()
    await running
    assert len(good.records) == 40 and all(r.complete for r in good.records)
    assert "webhook down" in caplog.text and broken.stats["errors"] >= 40
    assert calllog.stats["reporter-errors"] > 0


async def test_a_tracker_error_skips_one_event_not_the_stream(caplog):
    good = RecordCollector()
    tracker = TrackerFailingOnce()
    calllog = CallLog(tracker, [good])
    await follow(_events(RECORDINGS / "burst.ami.jsonl"), calllog)
    calllog.close("end")
    assert tracker.failed and "event skipped" in caplog.text
    assert calllog.stats["tracker-errors"] == 1
    assert len(good.records) == 40  # the one call with a lost event is still logged


def test_an_observer_error_does_not_stop_the_tracker():
    seen = []

    def flaky(event):
        seen.append(event)
        if len(seen) == 3:
            raise ValueError("presence bug")

    calllog = CallLog(Tracker(), observers=[flaky])
    records = [f.record for f in replay(read_events(RECORDINGS / "answered_owner.ami.jsonl"), calllog)
               if isinstance(f, CallFinished)]
    assert calllog.stats["observer-errors"] == 1
    assert len(records) == 1 and records[0].outcome == "answered"


async def test_a_stalled_reporter_drops_its_own_facts_and_never_holds_the_walk():
    stalled, good = Stalled(maxsize=5), RecordCollector()
    running = asyncio.create_task(stalled.run())
    calllog = CallLog(Tracker(), [stalled, good])
    # the whole burst is walked while the stalled reporter sits on its first record
    await asyncio.wait_for(follow(_socket_like(RECORDINGS / "burst.ami.jsonl"), calllog), 10)
    await asyncio.wait_for(stalled.started.wait(), 5)
    assert len(good.records) == 40
    # 40 records offered: one taken by the stalled task, 5 queued, the rest dropped and counted
    assert stalled.stats["dropped"] == 40 - 1 - 5
    running.cancel()
