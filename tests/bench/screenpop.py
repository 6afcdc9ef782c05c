"""Screen-pop latency benchmark (run by hand, not a test):

    CALLROUTER_TEST_MQTT_URL=mqtt://127.0.0.1:1883 .venv/bin/python tests/bench/screenpop.py [--calls 1000]

A whole Daemon (SQLite store, web app, `[mqtt]` to the real broker) behind a fake AMI
server. For each call (the `answered_owner` recording, ids made unique per call) the
clock starts when the fake server writes the call's first DialBegin frame and stops when
the `ringing` pop arrives (a) at an MQTT subscriber and (b) at a manager's WebSocket
client. Before each call the router is asked over FastAGI, as the dialplan does (not
timed; its decision starts the fetch of the card's history). Calls run one after another: the frames before that DialBegin are walked before
the clock starts, and each call is finished and stored before the next one begins. The ringing pop carries the full card (client from
the directory in memory, last calls and open callbacks from the store).

Baselines in the same run, same machine, same loop: a bare aiomqtt publish (QoS 1) ->
subscribe round trip through the same broker, and a bare aiohttp WebSocket echo round
trip. Everything (daemon, broker clients, WebSocket client) shares one process and loop,
as the daemon's tests do; the figures are ratios to those baselines as much as times.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import aiomqtt
from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from agisim import agi_call, route_request  # noqa: E402
from callrouter.config import MqttConfig  # noqa: E402
from fakeami import load_recording  # noqa: E402
from webfixture import running_api  # noqa: E402

RECORDING = HERE.parent / "fixtures" / "asterisk" / "answered_owner.ami.jsonl"
BASE = "1795370423."


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(name: str, ms: list[float]) -> str:
    return (f"{name:<38} n={len(ms):>5}  p50 {statistics.median(ms):7.2f} ms  p99 {pct(ms, 99):7.2f} ms  "
            f"max {max(ms):7.2f} ms")


async def mqtt_baseline(host: str, port: int, n: int) -> list[float]:
    topic = f"crbench-{secrets.token_hex(4)}/echo"
    out = []
    async with aiomqtt.Client(host, port, timeout=5) as sub, aiomqtt.Client(host, port, timeout=5) as pub:
        await sub.subscribe(topic, qos=1)
        messages = sub.messages.__aiter__()
        for i in range(n):
            t0 = time.perf_counter()
            await pub.publish(topic, json.dumps({"i": i, "pad": "x" * 900}).encode(), qos=1)
            await messages.__anext__()
            out.append((time.perf_counter() - t0) * 1000)
    return out


async def ws_baseline(n: int) -> list[float]:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    out = []
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            payload = json.dumps({"pad": "x" * 900})
            for _ in range(n):
                t0 = time.perf_counter()
                await ws.send_str(payload)
                await ws.receive()
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        await runner.cleanup()
    return out


async def pops(host: str, port: int, calls: int) -> tuple[list[float], list[float], dict]:
    frames = load_recording(RECORDING)
    # the DialBegin that rings the manager (the first one is the trunk's leg coming in)
    first_dial = next(i for i, f in enumerate(frames)
                      if "Event: DialBegin" in f and "DestChannel: Local/101@phones" in f)
    prefix = f"crbench-{secrets.token_hex(4)}"
    mqtt = MqttConfig(host=host, port=port, topic_prefix=prefix, client_id=f"{prefix}-pub")
    mqtt_ms: list[float] = []
    ws_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        async with running_api(url, mqtt=mqtt) as api, \
                aiomqtt.Client(host, port, timeout=5) as sub, aiohttp.ClientSession() as http:
            await sub.subscribe(f"{prefix}/lab/agents/+/ringing", qos=1)
            if os.environ.get("BENCH_NO_HISTORY"):  # diagnosis: the card without the store's part
                async def no_history(client_id, limit=5):
                    return [], []
                api.daemon.store.pop_history = no_history
            if os.environ.get("BENCH_NO_PREFETCH"):  # diagnosis: the history asked at ring time
                api.daemon.cards.prefetch = lambda call_id, client_id: None
            messages = sub.messages.__aiter__()
            ws = await http.ws_connect(api.url.replace("http", "ws") + "/api/pops/ws", headers=api.auth("ann"))
            async with asyncio.timeout(10):
                while not api.daemon.mqtt.connected:
                    await asyncio.sleep(0.01)

            async def ws_ringing() -> float:
                while True:
                    msg = await ws.receive()
                    if json.loads(msg.data)["event"] == "ringing":
                        return time.perf_counter()

            calllog = api.daemon.pbxs["lab"].calllog
            events = calllog.stats["events"]

            async def settle(done) -> None:
                async with asyncio.timeout(10):
                    while not done():
                        await asyncio.sleep(0.001)

            for i in range(calls):
                call = [f.replace(BASE, f"{1800000000 + i}.") for f in frames]
                # as in the dialplan: the router is asked first (not timed); its decision
                # starts the card's history fetch
                routed = await agi_call("127.0.0.1", api.agi_port,
                                        route_request("89161234567", linkedid=f"{1800000000 + i}.504"))
                assert routed.variables.get("CLIENT_ID") == "c-ann", routed.variables
                for f in call[:first_dial]:
                    api.ami.emit(f)
                await settle(lambda: calllog.stats["events"] >= events + first_dial)  # not timed
                waiting_ws = asyncio.create_task(ws_ringing())
                t0 = time.perf_counter()
                api.ami.emit(call[first_dial])
                try:
                    msg = await asyncio.wait_for(messages.__anext__(), 10)
                except TimeoutError:
                    raise SystemExit(f"call {i}: no ringing pop in 10 s; {api.daemon.counters()}") from None
                mqtt_ms.append((time.perf_counter() - t0) * 1000)
                ws_ms.append((await asyncio.wait_for(waiting_ws, 10) - t0) * 1000)
                body = json.loads(msg.payload)
                assert body["card"] and body["card"]["id"] == "c-ann", body
                assert body["card_status"] == "ok" and body["route"]["rule"], body
                for f in call[first_dial + 1:]:
                    api.ami.emit(f)
                events += len(call)
                # the call finished and stored before the next one starts (not timed)
                await settle(lambda: calllog.stats["events"] >= events and calllog.stats["calls"] >= i + 1
                             and all(r.depth == 0 for r in api.daemon.reporters))
            counters = api.daemon.counters()
            await ws.close()
    return mqtt_ms, ws_ms, counters


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    url = os.environ.get("CALLROUTER_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 1883
    base_mqtt = await mqtt_baseline(host, port, args.calls)
    base_ws = await ws_baseline(args.calls)
    mqtt_ms, ws_ms, counters = await pops(host, port, args.calls)
    print(summary("baseline: MQTT publish->subscribe", base_mqtt))
    print(summary("baseline: WebSocket echo round trip", base_ws))
    print(summary("DialBegin -> ringing pop at MQTT sub", mqtt_ms))
    print(summary("DialBegin -> ringing pop at WebSocket", ws_ms))
    print(f"p99 ratio to baseline: MQTT {pct(mqtt_ms, 99) / pct(base_mqtt, 99):.1f}x, "
          f"WebSocket {pct(ws_ms, 99) / pct(base_ws, 99):.1f}x; target p99 < 20 ms: "
          f"{'met' if max(pct(mqtt_ms, 99), pct(ws_ms, 99)) < 20 else 'MISSED'}")
    print(f"pops: ringing {counters.get('screenpop.ringing')}, mqtt published {counters.get('mqtt.published')}, "
          f"dropped {counters.get('mqtt.dropped', 0)}; card history prefetched "
          f"{counters.get('screenpop.history-prefetched', 0)}, asked at ring time {counters.get('screenpop.history-asked', 0)}, "
          f"late {counters.get('screenpop.card-late', 0)}")


if __name__ == "__main__":
    asyncio.run(main())
