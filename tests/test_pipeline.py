"""The pipeline keeps going when one event or one reporter goes wrong."""
from pathlib import Path

from callrouter.ami.capture import read_events
from callrouter.pipeline import flush, track
from callrouter.reporters import RecordCollector
from callrouter.tracker import Tracker

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"


class Broken(RecordCollector):
    async def agent_ringing(self, fact):
        raise RuntimeError("screen-pop service down")

    async def call_finished(self, record):
        raise RuntimeError("webhook down")


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


async def test_a_failing_reporter_does_not_stop_the_others(caplog):
    good = RecordCollector()
    tracker = Tracker()
    await track(_events(RECORDINGS / "burst.ami.jsonl"), tracker, [Broken(), good])
    await flush(tracker, [Broken(), good], "end")
    assert len(good.records) == 40 and all(r.complete for r in good.records)
    assert "webhook down" in caplog.text


async def test_a_tracker_error_skips_one_event_not_the_stream(caplog):
    good = RecordCollector()
    tracker = TrackerFailingOnce()
    await track(_events(RECORDINGS / "burst.ami.jsonl"), tracker, [good])
    await flush(tracker, [good], "end")
    assert tracker.failed and "event skipped" in caplog.text
    assert len(good.records) == 40  # the one call with a lost event is still logged
