"""Routing benchmark (run by hand; pytest does not collect it):

    .venv/bin/python tests/bench/route.py [--clients 1000000] [--seconds 4] [--rounds 3] [--concurrency 1,20]

1. A SQLite store with N clients (one phone each, 1 % of phones shared by two clients),
   made once through the store's own bulk import and reused (`--db`, `--fresh`).
2. The phone directory built from it: build time, memory, lookup latency in-process.
3. Over loopback, a load generator speaking FastAGI as Asterisk does (a header block like
   the recorded ones, `200 result=1` after every command) against, each in its own process:
   - `bare`: a FastAGI server that only answers three SET VARIABLE lines;
   - `router`: the real FastAGI server as shipped (directory, shipped rules, presence,
     every decision stored in the same SQLite file off the answer path), all six
     variables in one `SET VARIABLE ARRAY(...)` command;
   - `router-each`: the same with `agi.set_variables = "each"`: six SET VARIABLE, six
     round trips per call;
   - `router-nolog`: `router` without the decision log (what routing itself costs).
   Runs are interleaved between the servers (`--rounds`); calls/s is the median run, with
   the time a decision log still needs after a run counted; p50/p99 are over all calls
   (connect to close, as Asterisk waits); server CPU per call comes from getrusage and,
   for the decision-log process, from /proc.

Experiment knobs (environment): CR_BENCH_LINGER (decision-log batching window, s; default
the daemon's) and CR_BENCH_SWITCH (the server process's GIL switch interval, s; default Python's).
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
sys.path.insert(0, str(ROOT / "tests"))  # agisim, the Asterisk side

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


_STATE: dict = {}


async def serve_router(db: Path, port_out, log_decisions: bool = True, set_variables: str = "array") -> None:
    from callrouter.agi.server import FastAgiServer
    from callrouter.ami.events import DeviceStateChange
    from callrouter.config import AgiConfig
    from callrouter.decisionlog.process import DecisionLogProcess
    from callrouter.routing.presence import Presence
    from callrouter.routing.lookup import PhoneDirectory
    from callrouter.routing.router import Router
    from callrouter.routing.rules import RuleSet
    from callrouter.store import Store

    def rss_now_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024

    import gc
    rss_start = rss_now_mb()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with Store(f"sqlite+aiosqlite:///{db}") as store:
        directory = PhoneDirectory(store)
        t = time.perf_counter()
        stats = await directory.load()
        build_s = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gc.collect()
        rss_after = rss_now_mb() - rss_start

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

        # as the daemon does: the decision log is written by its own process
        linger = os.environ.get("CR_BENCH_LINGER")
        recorder = DecisionLogProcess(f"sqlite+aiosqlite:///{db}", maxsize=100_000,
                                      **({"linger": float(linger)} if linger else {}))
        _STATE["recorder"] = recorder
        if log_decisions:
            _STATE["recorder_task"] = asyncio.create_task(recorder.run(), name="route-decision-log")
        server = FastAgiServer(router, AgiConfig(set_variables=set_variables), recorder=recorder if log_decisions else None,
                               host="127.0.0.1", port=0,
                               clock=lambda: MONDAY_10)
        await server.start()
        port_out({"port": server.port, "clients": stats.clients, "phones": stats.phones,
                  "ambiguous": stats.ambiguous_phones, "build_s": build_s, "index_mb": stats.approx_bytes / 1e6,
                  "rss_delta_mb": (rss1 - rss0) / 1024, "rss_after_mb": rss_after, "lookup_p50_us": lat[len(lat) // 2] / 1000,
                  "lookup_p99_us": lat[int(len(lat) * 0.99)] / 1000, "lookup_max_us": lat[-1] / 1000,
                  "route_now_us": route_us})
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc; 0 if gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_main(mode: str, db: str, log_decisions: bool, set_variables: str) -> None:
    import logging
    logging.basicConfig(level=logging.WARNING)
    # 1 % of the callers are on two clients and most of those numbers call once: the
    # warning each gets (once per number per 10 min) would bury this report
    logging.getLogger("callrouter.routing.lookup").setLevel(logging.ERROR)

    def port_out(info: dict) -> None:
        print("READY " + json.dumps(info), flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        import signal
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        def cpu_now() -> None:
            # the server's CPU includes its decision-log process
            ru = resource.getrusage(resource.RUSAGE_SELF)
            rec = _STATE.get("recorder")
            pending = rec.pending if rec is not None and "recorder_task" in _STATE else 0
            child = getattr(rec, "_proc", None)
            print(f"CPUNOW {ru.ru_utime + ru.ru_stime + process_cpu(child.pid if child else None)} {pending}",
                  flush=True)

        loop.add_signal_handler(signal.SIGUSR1, cpu_now)
        if os.environ.get("CR_BENCH_SWITCH"):  # experiment: GIL switch interval for the server process
            sys.setswitchinterval(float(os.environ["CR_BENCH_SWITCH"]))
        task = asyncio.create_task(serve_bare(port_out) if mode == "bare" else serve_router(Path(db), port_out, log_decisions, set_variables))
        await stop.wait()
        rec = _STATE.get("recorder")
        logged = rec is not None and "recorder_task" in _STATE
        if logged:
            await rec.close(timeout=60)
            await _STATE.pop("recorder_task")
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print("CPU " + json.dumps({"user": ru.ru_utime, "sys": ru.ru_stime,
                                   "log": dict(rec.stats) if logged else None}),
              flush=True)

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
        self.last = b""

    def connection_made(self, transport):
        self.t = transport
        transport.write(self.request)

    def data_received(self, data):
        data = self.tail + data
        n = data.count(b"\n")
        if n:
            self.commands += n
            self.tail = data[data.rindex(b"\n") + 1:]
            if b"GET VARIABLE" in data:  # the router's one-off check that ARRAY() worked
                self.t.write(self._get(data))
                return
            self.last = data
            self.t.write(b"200 result=1\n" * n)
        else:
            self.tail = data

    def _get(self, data: bytes) -> bytes:
        """Answer GET VARIABLE as Asterisk would, from the SET VARIABLE lines seen before."""
        from agisim import agi_args, parse_set_variable

        name = agi_args(data.decode())[2]
        values = dict(kv for line in self.last.decode().splitlines(True) for kv in parse_set_variable(line) or ())
        return f"200 result=1 ({values[name]})\n".encode() if name in values else b"200 result=0\n"

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


async def load(port: int, concurrency: int, seconds: float, callers: list[str], start: int) -> dict:
    """`concurrency` simulated Asterisk channels calling back to back for `seconds`."""
    lat: list[float] = []
    commands: list[int] = []
    counter = iter(range(start, start + 10**8))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            k = next(counter)
            dt, n = await one_call(port, HEADER.format(n=k, caller=callers[k % len(callers)]).encode())
            lat.append(dt)
            commands.append(n)

    for k in range(100):  # warm-up
        await one_call(port, HEADER.format(n=start + k, caller=callers[k]).encode())
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"lat": lat, "wall": wall, "requests": len(lat), "commands": statistics.fmean(commands),
            "client_cpu": (time.process_time() - cpu0) / wall}


def summarize(runs: list[dict]) -> dict:
    lat = sorted(x for r in runs for x in r["lat"])
    return {"requests": len(lat), "rps": statistics.median(r["requests"] / (r["wall"] + r["drain"]) for r in runs),
            "rps_all": [round(r["requests"] / (r["wall"] + r["drain"])) for r in runs],
            "drain_s": max(r["drain"] for r in runs),
            "p50_ms": lat[len(lat) // 2] * 1000, "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
            "commands": statistics.fmean(r["commands"] for r in runs),
            "cpu_us": 1e6 * sum(r["server_cpu"] for r in runs) / sum(r["calls_incl_warmup"] for r in runs),
            "client_cpu": statistics.fmean(r["client_cpu"] for r in runs)}


def start_child(mode: str, db: Path, log_decisions: bool = True, set_variables: str = "array"
                ) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, __file__, "--serve", mode, "--db", str(db), "--set-variables", set_variables]
    cmd += [] if log_decisions else ["--no-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY "):
            return proc, json.loads(line[6:])
    raise RuntimeError(f"{mode} server did not start")


def cpu_of(proc: subprocess.Popen) -> tuple[float, int]:
    """(CPU seconds the server process has used so far, decisions waiting to be stored)."""
    import signal
    proc.send_signal(signal.SIGUSR1)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("CPUNOW "):
            _, cpu, pending = line.split()
            return float(cpu), int(pending)
    raise RuntimeError("server gone")


def drained(proc: subprocess.Popen) -> tuple[float, float]:
    """Wait until the server has stored every decision of the run: (seconds waited, CPU)."""
    t0 = time.perf_counter()
    while True:
        cpu, pending = cpu_of(proc)
        if pending == 0:
            return time.perf_counter() - t0, cpu
        time.sleep(0.05)


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
    ap.add_argument("--seconds", type=float, default=4.0, help="per run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs per server and concurrency, interleaved between the servers (median req/s, "
                         "pooled percentiles): a shared machine's noise hits both alike")
    ap.add_argument("--concurrency", default="1,20")
    ap.add_argument("--modes", default="bare,router,router-each,router-nolog",
                    help="servers to compare (bare is always included)")
    ap.add_argument("--no-log", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--set-variables", default="array", help=argparse.SUPPRESS)
    ap.add_argument("--serve", choices=["router", "bare"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        child_main(args.serve, args.db, not args.no_log, args.set_variables)
        return

    db = Path(args.db)
    asyncio.run(make_store(db, args.clients, args.fresh))
    rnd = random.Random(3)
    # 90 % known clients in the national form Asterisk often shows, 10 % unknown numbers
    callers = [("8" + phone_of(rnd.randrange(args.clients))[2:]) if k % 10 else f"8495{rnd.randrange(10**7):07d}"
               for k in range(100_000)]
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; servers and the load "
          f"generator are separate processes; {args.rounds} x {args.seconds:.0f} s per server and concurrency")
    # router: the real server as shipped (every decision stored, one SET VARIABLE ARRAY(...));
    # router-each: the same with agi.set_variables = "each" (six SET VARIABLE, six round trips);
    # router-nolog: as shipped without the decision log (what routing itself costs)
    modes = {"bare": ("bare", True, "array"), "router": ("router", True, "array"),
             "router-each": ("router", True, "each"), "router-nolog": ("router", False, "array")}
    wanted = {"bare", *args.modes.split(",")}
    modes = {k: v for k, v in modes.items() if k in wanted}
    procs: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    try:
        for name, (kind, log_decisions, set_variables) in modes.items():
            procs[name], info = start_child(kind, db, log_decisions, set_variables)
            ports[name] = info["port"]
            if name == "router":
                print(f"directory: {info['clients']:,} clients, {info['phones']:,} phones "
                      f"({info['ambiguous']:,} on two clients), built in {info['build_s']:.1f} s, "
                      f"~{info['index_mb']:.0f} MB packed; process RSS +{info['rss_after_mb']:.0f} MB after the "
                      f"build, +{info['rss_delta_mb']:.0f} MB at its peak")
                print(f"lookup in memory (200k random numbers): p50 {info['lookup_p50_us']:.1f} µs, "
                      f"p99 {info['lookup_p99_us']:.1f} µs, max {info['lookup_max_us']:.0f} µs; "
                      f"normalize+lookup+rules decision {info['route_now_us']:.1f} µs")
        results: dict[str, dict[int, dict]] = {m: {} for m in modes}
        start = 0
        for c in levels:
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            for rnd_i in range(args.rounds):
                order = list(modes) if rnd_i % 2 == 0 else list(reversed(modes))
                for m in order:
                    cpu0, _ = cpu_of(procs[m])
                    run = asyncio.run(load(ports[m], c, args.seconds, callers, start))
                    # the decision log must keep up: time it still needs after the run counts
                    run["drain"], cpu1 = drained(procs[m])
                    run["server_cpu"] = cpu1 - cpu0
                    run["calls_incl_warmup"] = run["requests"] + 100
                    runs[m].append(run)
                    start += 10**6
            for m in modes:
                r = results[m][c] = summarize(runs[m])
                print(f"{m:12s} c={c:<3d} {r['requests']:6d} calls {r['rps']:7.0f} calls/s "
                      f"(runs {r['rps_all']})  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                      f"server CPU {r['cpu_us']:4.0f} µs/call [{r['commands']:.0f} SET VARIABLE/call; "
                      + (f"log backlog up to {r['drain_s']:.1f} s after a run, counted; " if r["drain_s"] > 0.2 else "")
                      + f"load generator CPU {r['client_cpu']:.0%}]")
    finally:
        cpu = {m: stop_child(p) for m, p in procs.items()}
    for m in [m for m in ("router", "router-each") if m in modes]:
        log = (cpu.get(m) or {}).get("log")
        if log is not None:
            calls = sum(results[m][c]["requests"] + 100 * args.rounds for c in levels if c in results[m])
            print(f"{m}: decision log stored {log.get('decisions', 0):,} of ~{calls:,} calls "
                  f"(dropped when the queue was full: {log.get('dropped', 0):,}, failed: "
                  f"{log.get('decision-failed', 0):,})")
    print()
    ok = True
    for m in [m for m in ("router", "router-each", "router-nolog") if m in modes]:
        print(f"{m} vs bare:")
        for c in levels:
            b, r = results["bare"][c], results[m][c]
            thr, p99 = r["rps"] / b["rps"], r["p99_ms"] / b["p99_ms"]
            if m == "router":
                ok &= thr >= 0.7 and p99 <= 2.0
            print(f"  c={c:<3d} throughput {thr:.2f}x (target >= 0.70)   p99 {p99:.2f}x (target <= 2.00)")
    if "router" in modes:
        print("targets met (router with decision log)" if ok else "targets NOT met (router with decision log)")
    del cpu


if __name__ == "__main__":
    main()
