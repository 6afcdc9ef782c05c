"""Ingest benchmark (run by hand, not a test):

    .venv/bin/python tests/bench/ingest.py [--repeat 50]

The recorded `burst` stream (40 concurrent calls), replayed --repeat times with fresh
uniqueids, over loopback TCP from a fake AMI server. Measured in the same run:
  baseline  panoramisk alone: its Manager with a no-op event handler;
  callrouter  AmiSource (panoramisk + our framing + typed events) -> tracker -> store
             writer -> SQLite file, until every call record is committed.
Prints events/s for both and the ratio (target: end to end >= 0.5 x baseline).
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from panoramisk import Manager  # noqa: E402

from callrouter.ami.client import AmiSource  # noqa: E402
from callrouter.config import PbxConfig  # noqa: E402
from callrouter.calllog.storing import RecordWriter  # noqa: E402
from callrouter.calllog.walk import CallLog, follow  # noqa: E402
from callrouter.store import Store, upgrade  # noqa: E402
from callrouter.tracker import Tracker  # noqa: E402
from fakeami import FakeAmi, load_recording  # noqa: E402

BURST = HERE.parent / "fixtures" / "asterisk" / "burst.ami.jsonl"
_ID = re.compile(r"^((?:\w*?)(?:uniqueid|linkedid)): (\d+)\.(\d+)\r$", re.I | re.M)


def repeated_stream(repeat: int) -> tuple[list[str], int, int]:
    """The burst `repeat` times, each copy with its own uniqueids (so calls stay distinct)."""
    frames = load_recording(BURST)
    out = []
    for n in range(repeat):
        for raw in frames:
            out.append(_ID.sub(lambda m: f"{m.group(1)}: {m.group(2)}.{n}{m.group(3).zfill(6)}\r", raw))
    return out, len(out), 40 * repeat


async def baseline(frames: list[str]) -> float:
    """panoramisk with a no-op handler: events/s until the last event is dispatched."""
    count = 0
    done = asyncio.Event()
    total = len(frames)

    def noop(manager, message) -> None:
        nonlocal count
        count += 1
        if count >= total:
            done.set()

    async with FakeAmi(frames) as ami:
        manager = Manager(host="127.0.0.1", port=ami.port, username="bench", secret="bench",
                          ping_delay=3600, loop=asyncio.get_running_loop())
        manager.register_event("*", noop)
        t0 = time.perf_counter()
        await manager.connect()
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - t0
        manager.close()
    return total / elapsed


async def end_to_end(frames: list[str], calls: int, db: Path) -> tuple[float, int]:
    url = f"sqlite+aiosqlite:///{db}"
    await upgrade(url)
    async with Store(url) as store, FakeAmi(frames) as ami:
        writer = RecordWriter(store)
        calllog = CallLog(Tracker("bench"), [writer])
        cfg = PbxConfig(name="bench", port=ami.port, username="bench", secret="bench")
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            writing = tg.create_task(writer.run())
            async with AmiSource(cfg, ping_interval=3600) as source:
                async def stop_when_all_calls_saved() -> None:
                    while writer.saved < calls:
                        await asyncio.sleep(0.01)
                    await source.aclose()
                tg.create_task(stop_when_all_calls_saved())
                await follow(source.events(), calllog)
            await writer.close()
            await writing
        elapsed = time.perf_counter() - t0
        stored = await store.count_calls("bench")
    return len(frames) / elapsed, stored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=50, help="copies of the burst stream (default 50)")
    args = ap.parse_args()
    frames, events, calls = repeated_stream(args.repeat)
    print(f"stream: {events} events, {calls} calls (burst x {args.repeat})")
    base = asyncio.run(baseline(frames))
    with tempfile.TemporaryDirectory() as tmp:
        e2e, stored = asyncio.run(end_to_end(frames, calls, Path(tmp) / "bench.db"))
    print(f"panoramisk, no-op handler      : {base:10,.0f} events/s")
    print(f"callrouter end to end (SQLite) : {e2e:10,.0f} events/s   ({stored} call records stored)")
    print(f"ratio                          : {e2e / base:10.2f}   (target >= 0.50)")
    if stored != calls:
        print(f"ERROR: {stored} records stored, expected {calls}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
