"""The walk under load: a burst of AMI events already queued does not hold the event loop
(follow yields once it has walked SLICE_SECONDS, or YIELD_EVERY events) and yields the same records as the synchronous
replay; the tracker forgets finished calls beyond a bound, so a daemon's memory does not
grow with the number of calls it has seen."""
import re
from pathlib import Path

from callrouter.ami.capture import parse_raw_frame
from callrouter.ami.events import Hangup, parse_event
from callrouter.calllog.reporters import RecordCollector
from callrouter.calllog import walk
from callrouter.calllog.walk import SLICE_SECONDS, YIELD_EVERY, CallLog, follow, replay
from callrouter.tracker import CallFinished, Tracker
from fakeami import load_recording
from loopticks import LoopTicks

BURST = Path(__file__).parent / "fixtures" / "asterisk" / "burst.ami.jsonl"
_ID = re.compile(r"^((?:\w*?)(?:uniqueid|linkedid)): (\d+)\.(\d+)\r$", re.I | re.M)
CALLS_PER_COPY = 40


def burst_events(copies: int) -> list:
    """The recorded burst (40 concurrent calls), `copies` times, each copy with its own ids."""
    frames = load_recording(BURST)
    out = []
    for n in range(copies):
        for raw in frames:
            raw = _ID.sub(lambda m: f"{m.group(1)}: {m.group(2)}.{n}{m.group(3).zfill(6)}\r", raw)
            out.append(parse_event(parse_raw_frame(raw)))
    return out


async def _queued(events):
    """Like AmiSource.events() over a full queue: items come without a suspension."""
    for e in events:
        yield e


async def _walk_with_ticker(events, yield_every: int | None, slice_seconds: float | None = None,
                            observers=()) -> tuple[int, RecordCollector]:
    """follow() over events that are all there already, beside a task that counts how many
    times the event loop let it run meanwhile."""
    collector = RecordCollector()
    calllog = CallLog(Tracker("main"), [collector], observers=observers)
    async with LoopTicks() as ticks:
        await follow(_queued(events), calllog, yield_every=yield_every, slice_seconds=slice_seconds)
    return ticks.during, collector


async def test_a_queued_burst_lets_other_callbacks_run_every_few_events():
    events = burst_events(2)
    during, collector = await _walk_with_ticker(events, None)
    assert len(collector.records) == 2 * CALLS_PER_COPY
    # one turn of the loop per YIELD_EVERY events walked, not one per burst
    assert during >= len(events) // YIELD_EVERY - 1, (during, len(events))


async def test_without_yielding_the_walk_holds_the_loop_for_the_whole_burst():
    """The check above can fail: walking the same burst without yielding starves the ticker."""
    events = burst_events(2)
    during, _ = await _walk_with_ticker(events, 10**9, slice_seconds=10**9)
    assert during <= 1, during


async def test_slow_events_make_the_walk_yield_after_a_time_slice_not_a_count(monkeypatch):
    """Events that take long to walk: follow yields once SLICE_SECONDS of walking have
    passed, well before YIELD_EVERY events. The clock is a fake one that each event's walk
    moves on by 40 % of a slice (no timing is measured), so the loop runs other callbacks
    every 3 events."""
    now = [0.0]
    monkeypatch.setattr(walk, "_clock", lambda: now[0])

    def slow(_event) -> None:
        now[0] += SLICE_SECONDS * 0.4

    events = burst_events(1)
    during, collector = await _walk_with_ticker(events, None, observers=[slow])
    assert len(collector.records) == CALLS_PER_COPY
    assert during >= len(events) // 3 - 1, (during, len(events))


async def test_without_the_time_slice_slow_events_are_walked_yield_every_at_a_time(monkeypatch):
    """The check above can fail: with the slice out of reach, the same slow walk lets the
    loop run only every YIELD_EVERY events."""
    now = [0.0]
    monkeypatch.setattr(walk, "_clock", lambda: now[0])

    def slow(_event) -> None:
        now[0] += SLICE_SECONDS * 0.4

    events = burst_events(1)
    during, _ = await _walk_with_ticker(events, None, slice_seconds=10**9, observers=[slow])
    assert during <= len(events) // YIELD_EVERY + 1, (during, len(events))


async def test_yielding_walk_makes_the_same_records_as_the_replay():
    events = burst_events(3)
    want = [f.record for f in replay(events, CallLog(Tracker("main"))) if isinstance(f, CallFinished)]
    _, collector = await _walk_with_ticker(events, None)
    got = collector.records
    assert len(got) == 3 * CALLS_PER_COPY
    assert [r.model_dump(mode="json") for r in got] == [r.model_dump(mode="json") for r in want]
    assert all(r.complete for r in got)


def test_the_tracker_forgets_finished_calls_beyond_its_bound():
    tracker = Tracker("main", remember_finished=500)
    calllog = CallLog(tracker)
    copies = 10
    events = burst_events(copies)
    records = [f.record for e in events for f in calllog.feed(e) if isinstance(f, CallFinished)]
    assert len(records) == copies * CALLS_PER_COPY
    assert len({r.call_id for r in records}) == len(records)
    assert tracker.held() == {"channels": 0, "calls": 0, "linkedids": 0, "bridges": 0, "finished_remembered": 500}

    # a trailing event of the latest call is still known as one (dropped as noise) ...
    last_hangup = next(e for e in reversed(events) if isinstance(e, Hangup))
    assert tracker.feed(last_hangup) == []
    assert tracker.stats.after_finish == 1
    # ... one of the first call's, long forgotten, is an unknown channel: it creates nothing
    first_hangup = next(e for e in events if isinstance(e, Hangup))
    before = tracker.stats.unknown_channel
    assert tracker.feed(first_hangup) == []
    assert tracker.stats.unknown_channel == before + 1
    assert tracker.held()["channels"] == 0 and tracker.calls_in_flight == 0
