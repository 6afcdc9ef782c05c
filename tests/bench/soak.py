"""Soak (run by hand, not a test):

    .venv/bin/python tests/bench/soak.py [--calls 100000] [--clients 10000] [--warmup 5000]

The real daemon (`callrouter run` in its own process; a fresh SQLite store of --clients
clients in a temporary directory; the shipped rules, always open; 100 managers; the
decision log in its child process) fed by a fake AMI server over loopback with --calls
recorded calls: copies of the recorded `burst` stream (40 concurrent calls, 5,800 events),
each copy with fresh uniqueids, linkedids and bridge ids, each call first routed by a
FastAGI request as the dialplan makes it (the recorded requests, fresh ids). The AMI
stream goes as fast as the daemon reads it (TCP backpressure), the FastAGI requests of
the next copy meanwhile.

Prints the daemon's RSS after --warmup calls are stored (start) and after the last call
is stored (end), the growth, samples in between, and the records written: rows in the
store for this run's PBX over the calls fed (target: 100 %, RSS growth < 20 %).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from daemonrig import CALLS_PER_BURST, DaemonRig, FreshBursts, agi_call, loadavg  # noqa: E402


async def fresh_store(url: str, clients: int) -> None:
    """An empty schema (PostgreSQL: the database's public schema dropped and made again),
    migrated, with `clients` clients as tests/bench/route.py makes them."""
    import random

    from callrouter.store import Client, Store, upgrade
    from route import phone_of

    if not url.startswith("sqlite"):
        import asyncpg
        from sqlalchemy.engine import make_url
        u = make_url(url)
        conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, database=u.database,
                                     password=u.password)
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()
    await upgrade(url)
    rnd = random.Random(1)
    owners = [str(e) for e in range(100, 200)]
    async with Store(url) as store:
        await store.upsert_clients(
            Client(id=f"c-{i}", name=f"Client {i} LLC", owner_extension=rnd.choice(owners) if i % 3 == 0 else None,
                   monthly_turnover=round(rnd.lognormvariate(10.5, 1.6), 2), phones=(phone_of(i),))
            for i in range(clients))


def mb(kb: int) -> float:
    return kb / 1024


async def soak(args, workdir: Path) -> bool:
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'soak.db'}"
    await fresh_store(url, args.clients)
    print(f"store: {url.split('@')[-1]}, {args.clients:,} clients")
    rig = DaemonRig(url, workdir)
    bursts = FreshBursts()
    copies = max(1, args.calls // CALLS_PER_BURST)
    warm = min(copies, max(1, args.warmup // CALLS_PER_BURST))
    calls = copies * CALLS_PER_BURST
    await rig.start()
    print(f"daemon ready (pid {rig.proc.pid}), RSS {mb(rig.rss_kb()[0]):.0f} MB; load average {loadavg()}")
    agi_failed = 0

    async def route(requests: list[bytes]) -> None:
        nonlocal agi_failed
        results = await asyncio.gather(*(agi_call(rig.agi_port, r) for r in requests), return_exceptions=True)
        agi_failed += sum(1 for r in results if isinstance(r, BaseException))

    t_start = time.perf_counter()
    rss_start = None
    samples: list[tuple[int, float, float]] = []
    next_sample = time.perf_counter()
    frames, requests = bursts.copy(0)
    routing = asyncio.create_task(route(requests))
    events = 0
    try:
        for n in range(copies):
            await routing                     # this copy's calls are routed before their events come
            if n + 1 < copies:
                nxt = bursts.copy(n + 1)
                routing = asyncio.create_task(route(nxt[1]))
            await rig.feed(frames)
            events += bursts.events_per_copy
            if n + 1 == warm:
                await rig.wait_stored(warm * CALLS_PER_BURST, timeout=600)
                await asyncio.sleep(1.0)
                rss_start = rig.rss_kb()
                t_warm = time.perf_counter()
                print(f"after warm-up ({warm * CALLS_PER_BURST:,} calls stored): daemon RSS {mb(rss_start[0]):.1f} MB, "
                      f"decision-log process {mb(rss_start[1]):.1f} MB; load average {loadavg()}")
            now = time.perf_counter()
            if now >= next_sample and rss_start is not None:
                rss = rig.rss_kb()
                samples.append(((n + 1) * CALLS_PER_BURST, mb(rss[0]), now - t_start))
                print(f"  {(n + 1) * CALLS_PER_BURST:>8,} calls fed, {rig.stored():>8,} stored, RSS {mb(rss[0]):6.1f} MB "
                      f"(+{(rss[0] - rss_start[0]) / rss_start[0] * 100:5.1f} %), decision log {mb(rss[1]):5.1f} MB, "
                      f"{events / (now - t_start):,.0f} ev/s, load {loadavg()}", flush=True)
                next_sample = now + args.every
            if n + 1 < copies:
                frames = nxt[0]
        await rig.wait_stored(calls, timeout=900)
        t_end = time.perf_counter()
        await asyncio.sleep(1.0)
        rss_end = rig.rss_kb()
        detail = rig.stored_detail()
        decisions = rig.query("SELECT count(*) FROM route_decisions WHERE pbx = $1")[0]
    finally:
        code = await rig.stop()
    assert rss_start is not None
    log = rig.log_path.read_text(errors="replace")
    errors = sum(1 for ln in log.splitlines() if " ERROR " in ln or "Traceback" in ln)
    warnings = sum(1 for ln in log.splitlines() if " WARNING " in ln)
    growth = (rss_end[0] - rss_start[0]) / rss_start[0] * 100
    print(f"{calls:,} calls ({events:,} AMI events, {calls:,} FastAGI requests, {agi_failed} failed) in "
          f"{t_end - t_start:.0f} s ({events / (t_end - t_start):,.0f} events/s); load average {loadavg()}")
    print(f"daemon RSS: start (after {warm * CALLS_PER_BURST:,} calls) {mb(rss_start[0]):.1f} MB, "
          f"end {mb(rss_end[0]):.1f} MB: growth {growth:+.1f} % (target < 20 %) over "
          f"{calls - warm * CALLS_PER_BURST:,} calls in {t_end - t_warm:.0f} s")
    print(f"decision-log process RSS: {mb(rss_start[1]):.1f} -> {mb(rss_end[1]):.1f} MB")
    print(f"records written: {detail['records']:,} of {calls:,} ({detail['records'] / calls * 100:.2f} %; "
          f"{detail['distinct']:,} distinct call ids, {detail['complete']:,} complete, {detail['routed']:,} with "
          f"the router's decision joined); route decisions stored: {decisions:,}")
    print(f"daemon log: {errors} ERROR/traceback line(s), {warnings} WARNING line(s); exit code {code} (SIGTERM)")
    ok = detail["records"] == calls and detail["distinct"] == calls and growth < 20.0 and agi_failed == 0
    print("target (records 100 %, RSS growth < 20 %):", "met" if ok else "NOT met")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000, help="calls fed (whole copies of the 40-call burst)")
    ap.add_argument("--clients", type=int, default=10_000, help="clients in the fresh store")
    ap.add_argument("--database-url", help="the store (its schema is dropped and made again!); default: a new "
                    "SQLite file; e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/bench_load")
    ap.add_argument("--warmup", type=int, default=5_000, help="calls stored before the start RSS is taken")
    ap.add_argument("--every", type=float, default=30.0, help="s between progress lines")
    ap.add_argument("--keep", help="work in this directory and keep it (the store, the daemon's log)")
    args = ap.parse_args()
    print(f"load average at start: {loadavg()}")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        ok = asyncio.run(soak(args, Path(args.keep)))
    else:
        with tempfile.TemporaryDirectory(prefix="callrouter-soak-") as tmp:
            ok = asyncio.run(soak(args, Path(tmp)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
