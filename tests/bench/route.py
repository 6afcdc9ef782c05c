"""Routing benchmark (run by hand; pytest does not collect it):

    .venv/bin/python tests/bench/route.py [--clients 1000000] [--seconds 5] [--concurrency 1,20]

1. A SQLite store with N clients (one phone each, 1 % of phones shared by two clients),
   made once through the store's own bulk import and reused (`--db`, `--fresh`).
2. The phone directory built from it: build time, memory, lookup latency in-process.
3. Over loopback, a load generator speaking FastAGI as Asterisk does (the recorded header
   block, `200 result=1` after every command) against, in turn:
   - `router`: the real FastAGI server (directory, shipped rules, presence, decision log
     written to the same SQLite file off the answer path), 6 SET VARIABLE per call;
   - `bare`: a FastAGI server that only answers three SET VARIABLE lines.
   Each server runs in its own process (the load generator in this one), at each
   concurrency; p50/p99 latency (connect to close, as Asterisk waits) and requests/s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RULES_DIR = ROOT / "rules"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")  # business hours: the full rule path
HEADER = ("agi_network: yes\nagi_network_script: route\nagi_request: agi://127.0.0.1:4573/route\n"
          "agi_channel: PJSIP/trunk-{n:08x}\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1795370423.{n}\n"
          "agi_version: 22.10.1\nagi_callerid: {caller}\nagi_calleridname: {caller}\nagi_callingpres: 0\n"
          "agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 5550100\nagi_rdnis: unknown\n"
          "agi_context: from-pstn\nagi_extension: 5550100\nagi_priority: 2\nagi_enhanced: 0.0\n"
          "agi_accountcode: \nagi_threadid: 140426153985728\nagi_arg_1: 1795370423.{n}\n\n")


def phone_of(i: int) -> str:
    """Distinct valid Russian mobile numbers: i -> +79XXXXXXXXX (7919 is prime to 10**9)."""
    return f"+79{(i * 7919 + 12345) % 10**9:09d}"


# ------------------------------------------------------------------ data

async def make_store(db: Path, n: int, fresh: bool) -> None:
    from callrouter.store import Client, Store, upgrade

    url = f"sqlite+aiosqlite:///{db}"
    if db.exists() and not fresh:
        import sqlite3
        with sqlite3.connect(db) as c:
            have = c.execute("select count(*) from clients").fetchone()[0]
        if have == n:
            print(f"store: reusing {db} ({n:,} clients)")
            return
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)
    t = time.perf_counter()
    await upgrade(url)
    rnd = random.Random(1)
    owners = [str(e) for e in range(100, 200)]

    def clients():
        for i in range(n):
            phones = [phone_of(i)]
            if i % 100 == 1:
                phones.append(phone_of(i - 1))  # 1 % of numbers are on two clients
            yield Client(id=f"c-{i}", name=f"Client {i} LLC", owner_extension=rnd.choice(owners) if i % 3 == 0 else None,
                         monthly_turnover=round(rnd.lognormvariate(10.5, 1.6), 2), problem=(i % 97 == 0),
                         blocked=(i % 1009 == 0), phones=tuple(phones))

    async with Store(url) as store:
        await store.upsert_clients(clients())
    print(f"store: {n:,} clients written to {db} in {time.perf_counter() - t:.1f} s "
          f"({db.stat().st_size / 1e6:.0f} MB)")


# ------------------------------------------------------------------ servers (child processes)

class _BareConnection(asyncio.Protocol):
    """The least a FastAGI server can do: wait for the blank line, then three SET VARIABLE,
    each after the previous reply (the same I/O technique as the router's server)."""

    LINES = (b'SET VARIABLE ROUTE_DIAL "Local/retail@queues"\n', b'SET VARIABLE ROUTE_TIMEOUT "40"\n',
             b'SET VARIABLE ROUTE_REASON "tier:retail"\n')

    def connection_made(self, transport):
        self.t = transport
        self.buf = b""
        self.sent = -1

    def data_received(self, data):
        self.buf += data
        if self.sent < 0:
            i = self.buf.find(b"\n\n")
            if i < 0:
                return
            self.buf = self.buf[i + 2:]
            self.sent = 1
            self.t.write(self.LINES[0])
        while b"\n" in self.buf:
            self.buf = self.buf[self.buf.index(b"\n") + 1:]
            if self.sent == len(self.LINES):
                self.t.close()
                return
            self.t.write(self.LINES[self.sent])
            self.sent += 1


async def serve_bare(port_out) -> None:
    server = await asyncio.get_running_loop().create_server(_BareConnection, "127.0.0.1", 0, backlog=1024)
    port_out({"port": server.sockets[0].getsockname()[1]})
    await asyncio.Event().wait()


async def serve_router(db: Path, port_out, log_decisions: bool = True) -> None:
    from callrouter.agi.server import DecisionRecorder, FastAgiServer
    from callrouter.ami.events import DeviceStateChange
    from callrouter.config import AgiConfig
    from callrouter.presence import Presence
    from callrouter.routing.lookup import PhoneDirectory
    from callrouter.routing.router import Router
    from callrouter.routing.rules import RuleSet
    from callrouter.store import Store

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with Store(f"sqlite+aiosqlite:///{db}") as store:
        directory = PhoneDirectory(store)
        t = time.perf_counter()
        stats = await directory.load()
        build_s = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        # lookup latency in-process: random known and unknown numbers
        n = stats.clients
        rnd = random.Random(2)
        sample = [phone_of(rnd.randrange(n)) if k % 10 else f"+7495{rnd.randrange(10**7):07d}"
                  for k in range(200_000)]
        lat = []
        for p in sample:
            t0 = time.perf_counter_ns()
            directory.lookup_now(p)
            lat.append(time.perf_counter_ns() - t0)
        lat.sort()

        presence = Presence()
        for e in range(100, 200, 3):  # a third of the owners busy
            presence.apply(DeviceStateChange(None, f"PJSIP/{e}", "INUSE"))
        router = Router(RuleSet(RULES_DIR), directory, presence)
        t0 = time.perf_counter_ns()
        for p in sample[:50_000]:
            router.route_now(p, MONDAY_10)
        route_us = (time.perf_counter_ns() - t0) / 50_000 / 1000

        recorder = DecisionRecorder(store, maxsize=100_000)
        if log_decisions:
            recorder.start()
        server = FastAgiServer(router, AgiConfig(), recorder=recorder if log_decisions else None, host="127.0.0.1", port=0,
                               clock=lambda: MONDAY_10)
        await server.start()
        port_out({"port": server.port, "clients": stats.clients, "phones": stats.phones,
                  "ambiguous": stats.ambiguous_phones, "build_s": build_s, "index_mb": stats.approx_bytes / 1e6,
                  "rss_delta_mb": (rss1 - rss0) / 1024, "lookup_p50_us": lat[len(lat) // 2] / 1000,
                  "lookup_p99_us": lat[int(len(lat) * 0.99)] / 1000, "lookup_max_us": lat[-1] / 1000,
                  "route_now_us": route_us})
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()


def child_main(mode: str, db: str, log_decisions: bool) -> None:
    def port_out(info: dict) -> None:
        print("READY " + json.dumps(info), flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        import signal
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.create_task(serve_bare(port_out) if mode == "bare" else serve_router(Path(db), port_out, log_decisions))
        await stop.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print("CPU " + json.dumps({"user": ru.ru_utime, "sys": ru.ru_stime}), flush=True)

    asyncio.run(run())


# ------------------------------------------------------------------ load generator

class _Asterisk(asyncio.Protocol):
    """The Asterisk side, as cheap as Python allows (replies from the data callback, no
    task switch): sends the header block, answers every command line `200 result=1`."""

    def __init__(self, request: bytes, done: asyncio.Future):
        self.request = request
        self.done = done
        self.commands = 0
        self.tail = b""

    def connection_made(self, transport):
        self.t = transport
        transport.write(self.request)

    def data_received(self, data):
        data = self.tail + data
        n = data.count(b"\n")
        if n:
            self.commands += n
            self.tail = data[data.rindex(b"\n") + 1:]
            self.t.write(b"200 result=1\n" * n)
        else:
            self.tail = data

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(self.commands)


async def one_call(port: int, request: bytes) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    done = loop.create_future()
    await loop.create_connection(lambda: _Asterisk(request, done), "127.0.0.1", port)
    n = await done
    return time.perf_counter() - t0, n


async def load(port: int, concurrency: int, seconds: float, callers: list[str]) -> dict:
    lat: list[float] = []
    commands: list[int] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            k = next(counter)
            req = HEADER.format(n=k, caller=callers[k % len(callers)]).encode()
            dt, n = await one_call(port, req)
            lat.append(dt)
            commands.append(n)

    # warm-up
    for k in range(200):
        await one_call(port, HEADER.format(n=k, caller=callers[k]).encode())
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "rps": len(lat) / wall, "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000, "mean_ms": statistics.fmean(lat) * 1000,
            "commands": statistics.fmean(commands)}


def start_child(mode: str, db: Path, log_decisions: bool = True) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, __file__, "--serve", mode, "--db", str(db)] + ([] if log_decisions else ["--no-log"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY "):
            return proc, json.loads(line[6:])
    raise RuntimeError(f"{mode} server did not start")


def stop_child(proc: subprocess.Popen) -> dict:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    for line in out.splitlines():
        if line.startswith("CPU "):
            return json.loads(line[4:])
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/callrouter-bench.db")
    ap.add_argument("--fresh", action="store_true", help="rebuild the store even if it has the right size")
    ap.add_argument("--seconds", type=float, default=5.0, help="per server and concurrency")
    ap.add_argument("--concurrency", default="1,20")
    ap.add_argument("--no-log", action="store_true",
                    help="router without the decision log (shows what storing every decision costs)")
    ap.add_argument("--serve", choices=["router", "bare"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        child_main(args.serve, args.db, not args.no_log)
        return

    db = Path(args.db)
    asyncio.run(make_store(db, args.clients, args.fresh))
    rnd = random.Random(3)
    # 90 % known clients in the national form Asterisk often shows, 10 % unknown numbers
    callers = [("8" + phone_of(rnd.randrange(args.clients))[2:]) if k % 10 else f"8495{rnd.randrange(10**7):07d}"
               for k in range(100_000)]
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, dict[int, dict]] = {}
    for mode in ("bare", "router"):
        proc, info = start_child(mode, db, not args.no_log)
        try:
            if mode == "router":
                print(f"directory: {info['clients']:,} clients, {info['phones']:,} phones "
                      f"({info['ambiguous']:,} on two clients), built in {info['build_s']:.1f} s, "
                      f"~{info['index_mb']:.0f} MB packed (process RSS +{info['rss_delta_mb']:.0f} MB)")
                print(f"lookup in memory: p50 {info['lookup_p50_us']:.1f} µs, p99 {info['lookup_p99_us']:.1f} µs, "
                      f"max {info['lookup_max_us']:.0f} µs; lookup+rules decision {info['route_now_us']:.1f} µs")
            results[mode] = {}
            for c in levels:
                cpu0 = None
                r = asyncio.run(load(info["port"], c, args.seconds, callers))
                results[mode][c] = r
                print(f"{mode:6s} c={c:<3d} {r['requests']:6d} req  {r['rps']:7.0f} req/s  "
                      f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  ({r['commands']:.0f} commands/call)")
                del cpu0
        finally:
            cpu = stop_child(proc)
        if cpu:
            total = sum(results[mode][c]["requests"] for c in levels) + 200 * len(levels)
            print(f"{mode:6s} server CPU {cpu['user'] + cpu['sys']:.1f} s for {total:,} calls "
                  f"(incl. startup)")
    print()
    print("router vs bare:")
    ok = True
    for c in levels:
        b, r = results["bare"][c], results["router"][c]
        thr, p99 = r["rps"] / b["rps"], r["p99_ms"] / b["p99_ms"]
        ok &= thr >= 0.7 and p99 <= 2.0
        print(f"  c={c:<3d} throughput {thr:.2f}x (target >= 0.70)   p99 {p99:.2f}x (target <= 2.00)")
    print("targets met" if ok else "targets NOT met")


if __name__ == "__main__":
    main()
