"""Routing under an AMI burst (run by hand, not a test):

    .venv/bin/python tests/bench/route_under_load.py [--clients 1000000] [--cycles 6] [--window 2.2]
                         [--rate 5250] [--agi-rate 200] [--compare] [--experiment 'LABEL|mod.NAME=value|code']

The real daemon (`callrouter run`, its own process, a SQLite store of --clients clients,
the shipped rules with an always-open calendar, 100 managers, decision log in its child
process) between a fake AMI server in a third process (tests/bench/amifeeder.py: it builds
and pushes the bursts and polls the store) and a FastAGI caller, alone on this process's
event loop, over loopback. In one run, FastAGI calls at --agi-rate calls/s, paced, to known clients' numbers, answer
time from connect to close (what Asterisk waits), filed by the window they started in:
  - idle windows: no AMI traffic, --window s each;
  - AMI burst windows: the recorded `burst` stream (40 concurrent calls; fresh ids per
    copy), as many whole copies as --window s at --rate events/s make, pushed at that rate;
    the window lasts until the last of their call records is in the store, and --settle s
    more (the reporters' trailing work); the next burst's frames are built in the feeder
    during the idle window before it;
alternating, --cycles bursts between --cycles + 1 idle windows, so the rest of a shared
machine weighs on both alike. Prints p50/p99/max of each, the burst p99 over the idle
p99 (target <= 2x), and the AMI events the daemon actually ingested per second: the
bursts' events over the burst windows' time (first frame to the last record stored).
As shipped, the router runs in its own process (`[agi] routing = "process"`); --compare
runs the same again with `routing = "inline"`: the FastAGI server on the daemon's own event
loop, beside the AMI reading, the call log and the reporters (what it was before: the
walk's and the AMI read's 0.5 ms slices and the FIN at once keep that loop's turns short);
--experiment adds a daemon with module globals set or code run first, in the daemon's
main process (e.g. a GIL switch interval).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from daemonrig import CALLS_PER_BURST, DaemonRig, FreshBursts, agi_call, loadavg  # noqa: E402
from route import HEADER, make_store, phone_of  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000


async def agi_load(rig: DaemonRig, rate: float, stop: asyncio.Event, callers: list[str], first: int,
                   lat: dict[str, list[float]], label) -> None:
    """Calls at `rate`/s, each on its own (a slow answer does not delay the next call);
    each latency is filed under `label()` as it was when the call started."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pending: set[asyncio.Task] = set()
    k = 0
    failed = 0

    async def one(n: int) -> None:
        nonlocal failed
        req = HEADER.format(n=n, caller=callers[n % len(callers)]).encode()
        phase = label()
        try:
            took = await agi_call(rig.agi_port, req)
        except (OSError, TimeoutError):
            failed += 1
            return
        if phase is not None:
            lat.setdefault(phase, []).append(took)

    while not stop.is_set():
        k += 1
        t = asyncio.create_task(one(first + k))
        pending.add(t)
        t.add_done_callback(pending.discard)
        delay = t0 + k / rate - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
    await asyncio.gather(*pending)
    if failed:
        print(f"  WARNING: {failed} FastAGI calls failed", file=sys.stderr)


async def interleaved(rig: DaemonRig, args, callers: list[str], copy0: int, events_per_copy: int
                      ) -> tuple[dict[str, list[float]], dict]:
    """FastAGI calls throughout; AMI bursts and idle windows alternate (`--cycles` of each,
    plus a last idle window), so the other work on a shared machine weighs on both alike.
    A burst window is `copies` whole copies of the recorded burst pushed at `--rate` by the
    AMI feeder process; it lasts until the last of their records is stored (the daemon has
    ingested them), and `--settle` s more. This loop only makes the FastAGI calls and waits
    for the feeder's answers: the frames are built, pushed and the store polled over there."""
    copies = max(1, round(args.window * args.rate / events_per_copy))
    state: dict = {"phase": None, "cycle": 0}
    lat: dict[str, list[float]] = {}
    stop = asyncio.Event()
    agi = asyncio.create_task(agi_load(rig, args.agi_rate, stop, callers, 20_000_000, lat,
                                       lambda: state["phase"]))
    await asyncio.sleep(2.0)  # warm-up, not counted
    events = ingest_s = cpu = child_cpu = 0.0
    calls = backlog_max = 0
    sent_s = 0.0
    for cycle in range(args.cycles + 1):
        state["phase"] = "idle"
        if cycle == args.cycles:
            await asyncio.sleep(args.window)
            break
        # the next burst's frames are built (over there) during this idle window
        t_idle = time.perf_counter()
        await rig.feeder({"cmd": "prepare", "first": copy0 + cycle * copies, "copies": copies})
        await asyncio.sleep(max(0.0, args.window - (time.perf_counter() - t_idle)))
        state["phase"] = "burst"
        cpu0, child0 = rig.cpu_s(), rig.children_cpu_s()
        done = await rig.feeder({"cmd": "burst", "rate": args.rate, "timeout": 300.0})
        cpu += rig.cpu_s() - cpu0
        child_cpu += rig.children_cpu_s() - child0
        sent_s += done["sent_s"]
        ingest_s += done["ingest_s"]
        backlog_max = max(backlog_max, done["backlog_max"])
        # the reporters' last work (pops, callbacks, decisions) follows the records: still
        # the burst's, so the calls made meanwhile count as the burst's, not the idle window's
        await asyncio.sleep(args.settle)
        events += done["events"]
        calls += copies * CALLS_PER_BURST
    state["phase"] = None
    stop.set()
    await agi
    return lat, {"events": int(events), "calls": calls, "sent_rate": events / sent_s,
                 "ingest_rate": events / ingest_s, "ingest_s": ingest_s, "backlog_max": backlog_max,
                 "daemon_cpu": cpu / ingest_s, "children_cpu": child_cpu / ingest_s}


def line(name: str, lat: list[float]) -> str:
    return (f"  {name:<22} {len(lat):6d} calls   p50 {pct(lat, .5):7.2f} ms   p99 {pct(lat, .99):7.2f} ms   "
            f"max {max(lat) * 1000:7.1f} ms")


async def one_run(label: str, db: Path, args, patches: dict | None, copy0: int, prelude: str = "",
                  routing: str = "process") -> dict:
    rnd = random.Random(7)
    # known clients, none on a shared number (the bench store shares phone_of(100k))
    callers = [phone_of(i).replace("+7", "8") for i in (rnd.randrange(args.clients) for _ in range(5000))
               if i % 100 != 0]
    events_per_copy = FreshBursts().events_per_copy
    with tempfile.TemporaryDirectory(prefix="route-under-load-") as tmp:
        rig = DaemonRig(f"sqlite+aiosqlite:///{db}", Path(tmp), patches=patches, prelude=prelude, ami_process=True,
                        routing=routing)
        t = time.perf_counter()
        await rig.start()
        rss, children_rss = rig.rss_kb()
        print(f"{label}: daemon ready in {time.perf_counter() - t:.1f} s (pid {rig.proc.pid}, "
              f"RSS {rss / 1024:.0f} MB; its child processes {children_rss / 1024:.0f} MB); load average {loadavg()}")
        try:
            load_before = loadavg()
            lat, info = await interleaved(rig, args, callers, copy0, events_per_copy)
            load_after = loadavg()
            detail = rig.stored_detail()
        finally:
            code = await rig.stop()
    idle, burst = lat["idle"], lat["burst"]
    print(line("idle windows", idle))
    print(line("AMI burst windows", burst))
    ratio = pct(burst, .99) / pct(idle, .99)
    print(f"  AMI burst: {info['events']:,} events ({info['calls']:,} calls) sent at {info['sent_rate']:,.0f} ev/s; "
          f"ingested at {info['ingest_rate']:,.0f} ev/s (first frame to the last record stored, "
          f"{info['ingest_s']:.1f} s); daemon CPU {info['daemon_cpu'] * 100:.0f} % of a core "
          f"(its child processes {info['children_cpu'] * 100:.0f} %); "
          f"unread AMI bytes at most {info['backlog_max']:,}")
    print(f"  records of this run: {detail['records']:,} stored ({detail['complete']:,} complete); daemon exit {code}")
    print(f"  p99 during the bursts / idle p99: {pct(burst, .99):.2f} / {pct(idle, .99):.2f} ms "
          f"= {ratio:.2f}x (target <= 2x)   p50 {pct(burst, .5) / pct(idle, .5):.2f}x")
    print(f"  load average before {load_before}, after {load_after}")
    return {"ratio": ratio, "ingest": info["ingest_rate"]}


async def main_async(args) -> None:
    db = Path(args.db or f"/tmp/callrouter-load-bench-{args.clients}.db")
    await make_store(db, args.clients, fresh=False)
    runs: list[tuple[str, dict | None, str, str]] = [("as shipped (routing process)", None, "", "process")]
    if args.compare:
        runs.append(("routing inline", None, "", "inline"))
    if args.experiment:  # by hand: --experiment 'label|module.GLOBAL=value;...|python[|inline]'
        for spec in args.experiment:
            label, _, rest = spec.partition("|")
            assigns, _, rest = rest.partition("|")
            prelude, _, routing = rest.partition("|")
            patches = {k: eval(v) for k, v in (a.split("=", 1) for a in assigns.split(";") if a)}
            runs.append((label, patches, prelude, routing or "process"))
    results = []
    for i, (label, patches, prelude, routing) in enumerate(runs):
        results.append((label, await one_run(label, db, args, patches, copy0=i * 1000, prelude=prelude,
                                             routing=routing)))
    print("summary: " + "; ".join(f"{label}: p99 ratio {r['ratio']:.2f}x, ingested {r['ingest']:,.0f} ev/s"
                                  for label, r in results))
    ok = results[0][1]["ratio"] <= 2.0 and results[0][1]["ingest"] >= 5000
    print("target (p99 <= 2x idle while >= 5,000 ev/s are ingested):", "met" if ok else "NOT met")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1_000_000)
    ap.add_argument("--db", help="the SQLite store (default /tmp/callrouter-load-bench-<clients>.db, kept)")
    ap.add_argument("--cycles", type=int, default=6, help="AMI bursts (idle windows: one more)")
    ap.add_argument("--window", type=float, default=2.2, help="s per window (a burst: whole copies of the stream)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="s after a burst's last record is stored that still count as the burst")
    ap.add_argument("--rate", type=float, default=5250.0, help="AMI events/s pushed during the burst")
    ap.add_argument("--agi-rate", type=float, default=200.0, help="FastAGI calls/s throughout")
    ap.add_argument("--compare", action="store_true",
                    help="also run with the router on the daemon's own loop ([agi] routing = \"inline\")")
    ap.add_argument("--experiment", action="append", help="another daemon to compare: 'LABEL|mod.NAME=value;...|code'")
    args = ap.parse_args()
    print(f"load average at start: {loadavg()} (2 cores: compare ratios, not times)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
