"""Webhook delivery benchmark (run by hand, not a test):

    .venv/bin/python tests/bench/webhook.py [--n 2000] [--concurrency 4]

A receiver (aiohttp, a child process, answers 204) on loopback. Measured in the same run,
calls per second:
- baseline: bare aiohttp POSTs of the same bodies, `concurrency` at a time, nothing stored;
- live: `WebhookReporter` as the daemon runs it, N finished calls offered at once: each put
  into the outbox (fsynced), signed, POSTed, removed (fsynced);
- backlog: N calls already in the outbox (a receiver back after an outage), drained.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from callrouter.ami.capture import read_events
from callrouter.calllog.walk import replay_records
from callrouter.config import WebhookConfig
from callrouter.tracker import CallFinished
from callrouter.webhook import WebhookReporter
from callrouter.webhook.outbox import Outbox

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "asterisk"


def receiver(port: int) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(n: int):
    base = replay_records(read_events(FIX / "blind_transfer.ami.jsonl"))[0]
    return [base.model_copy(update={"call_id": f"{i}.1"}) for i in range(n)]


async def baseline(url: str, bodies: list[bytes], concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as http:
        async def one(body: bytes) -> None:
            async with sem, http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                assert r.status == 204
        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - t0)


async def ours(url: str, recs, concurrency: int, *, backlog: bool) -> float:
    path = Path(tempfile.mkdtemp()) / "spool.db"
    cfg = WebhookConfig(url=url, secret=SecretStr("bench-secret-0123456789"), concurrency=concurrency, retry_min=0.05, retry_max=0.5)
    outbox = Outbox(path)
    if backlog:
        outbox.put([(f"main:{r.call_id}", r.to_json().encode()) for r in recs])
    reporter = WebhookReporter(cfg, outbox)
    t0 = time.perf_counter()
    running = asyncio.create_task(reporter.run())
    if not backlog:
        for r in recs:
            reporter.offer(CallFinished(r))
    while reporter.stats["delivered"] < len(recs):
        await asyncio.sleep(0.01)
    rate = len(recs) / (time.perf_counter() - t0)
    await reporter.close(5)
    await running
    return rate


async def main(n: int, concurrency: int) -> None:
    port = free_port()
    proc = multiprocessing.Process(target=receiver, args=(port,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}/hook"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    recs = records(n)
    bodies = [r.to_json().encode() for r in recs]
    try:
        base = await baseline(url, bodies, concurrency)
        live = await ours(url, recs, concurrency, backlog=False)
        back = await ours(url, recs, concurrency, backlog=True)
    finally:
        proc.terminate()
    print(f"{n} calls of {len(bodies[0])} bytes, concurrency {concurrency}")
    print(f"{'path':<48}{'calls/s':>10}{'vs baseline':>13}")
    print(f"{'baseline: bare aiohttp POSTs':<48}{base:>10,.0f}{1.0:>12.2f}x")
    print(f"{'webhook, live (outbox put + POST + delete)':<48}{live:>10,.0f}{live / base:>12.2f}x")
    print(f"{'webhook, backlog drain (POST + delete)':<48}{back:>10,.0f}{back / base:>12.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=4)
    a = ap.parse_args()
    asyncio.run(main(a.n, a.concurrency))
