"""CPU per AMI event of the daemon's own path, offline (run by hand, not a test):

    .venv/bin/python tests/bench/ami_cpu.py [COPIES] [--profile OUT.prof]

Copies of the recorded `burst` stream (fresh ids; the first is a warm-up, not counted), as
bytes cut into 64 KiB reads -> FrameSplitter -> the live client's `_Protocol._frame` (on a
stub protocol) -> the call log's walk (presence, tracker, route log, every reporter's
`offer`), then the reporters' batches run to completion (record writer, callbacks keeper,
pop builder, on a new SQLite store; no phone directory, so the keeper and the builder ask
the store for clients, which the daemon does not). Prints the main thread's CPU per event
for the walk and for the batches. To compare with older code, run it from outside the
checkout with that code first on the path, e.g.
    git archive BASE callrouter | tar -x -C /tmp/base && cd /tmp &&
    PYTHONPATH=/tmp/base /work/wt-perf/.venv/bin/python /work/wt-perf/tests/bench/ami_cpu.py
"""
import asyncio, sys, time, tempfile, cProfile
import callrouter.ami.client, callrouter.store, callrouter.ami.events as _ev; print("code:", _ev.__file__)
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE)); sys.path.append(str(HERE.parent))  # after PYTHONPATH: the code measured
from daemonrig import FreshBursts
from callrouter.ami.client import _Protocol, _Counters
from callrouter.ami.framing import FrameSplitter
from callrouter.calllog.walk import CallLog
from callrouter.calllog.routes import RouteLog
from callrouter.calllog.storing import RecordWriter
from callrouter.devices import DeviceMap
from callrouter.routing.presence import Presence
from callrouter.screenpop.builder import CardSource, PopBuilder
from callrouter.screenpop.hub import PopHub
from callrouter.screenpop.keeper import CallbackKeeper
from callrouter.tracker import Tracker
from callrouter.config import ManagerConfig
from callrouter.store import Store, upgrade
import functools

class Src:
    where = "AMI offline"
    def __init__(self, sink): self._c = _Counters(); self._offer = sink

def make_proto(sink):
    p = _Protocol.__new__(_Protocol)
    p._source = Src(sink); p.encoding = "utf-8"; p.responses = {}
    return p

async def main():
    copies = int(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else 10
    prof_out = sys.argv[sys.argv.index("--profile") + 1] if "--profile" in sys.argv else None
    fb = FreshBursts()
    data = [fb.copy(n)[0] for n in range(copies)]
    managers = [ManagerConfig(extension=str(e), devices=[f"PJSIP/{e}"]) for e in range(100, 200)]
    devices = DeviceMap(managers)
    tmp = tempfile.mkdtemp()
    url = f"sqlite+aiosqlite:///{tmp}/s.db"; await upgrade(url)
    store = Store(url); await store.__aenter__()
    await store.upsert_managers(managers)
    routes = RouteLog(); hub = PopHub()
    cards = CardSource(None, store, routes, 0.2)
    reporters = [RecordWriter(store), CallbackKeeper(store, None), PopBuilder(hub, cards, extensions=frozenset(m.extension for m in managers))]
    presence = Presence(devices)
    tracker = Tracker("offline", devices, "RU")
    calllog = CallLog(tracker, reporters, observers=[functools.partial(presence.apply, source="offline")], enrich=routes.enrich)
    tasks = [asyncio.create_task(r.run()) for r in reporters]
    events = []
    proto = make_proto(events.append)
    splitter = FrameSplitter(1 << 20)
    n_ev = 0
    prof = cProfile.Profile() if prof_out else None
    # warm-up copy 0 not timed
    t_walk = t_rep = 0.0
    for i, blob in enumerate(data):
        if prof and i == 1: prof.enable()
        c0 = time.thread_time(); p0 = time.process_time()
        for k in range(0, len(blob), 65536):
            for fr in splitter.feed(blob[k:k + 65536]):
                proto._frame(fr)
        for e in events:
            calllog.feed(e)
        c1 = time.thread_time()
        for r in reporters: await r.flush()
        c2 = time.thread_time(); p2 = time.process_time()
        if i > 0:
            n_ev += len(events); t_walk += c1 - c0; t_rep += c2 - c1
        events.clear()
    if prof: prof.disable(); prof.dump_stats(prof_out)
    calls = (copies - 1) * 40
    print(f"events {n_ev}  walk (split+parse+feed+offer) {t_walk/n_ev*1e6:.1f} us/event   "
          f"reporters' batches {t_rep/n_ev*1e6:.1f} us/event ({t_rep/calls*1e3:.2f} ms/call)   "
          f"total {(t_walk+t_rep)/n_ev*1e6:.1f} us/event (main thread CPU)")
    print("stats", dict(calllog.stats), {r.name: dict(r.stats) for r in reporters})
    for t in tasks: t.cancel()
    await store.close()
asyncio.run(main())
