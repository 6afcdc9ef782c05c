"""Spool benchmark (run by hand, not a test):

    .venv/bin/python tests/bench/spool.py [--n 300]

Why the spool is stdlib sqlite3 behind `asyncio.to_thread` rather than aiosqlite: both
write the same durable transaction (WAL, synchronous=FULL, BEGIN IMMEDIATE, executemany of
`batch` call records of ~1.5 KB); measured in the same run, puts per second and the
event loop's longest stall while they run (a 1 ms ticker), for batches of 1 and 100.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiosqlite

from callrouter.store.spool import RECORD, Spool

PAYLOAD = b"x" * 1500


async def ticker(stop: asyncio.Event, worst: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last - 0.001)
        last = now


async def ours(path: Path, n: int, batch: int) -> float:
    spool = Spool(path)
    t0 = time.perf_counter()
    for _ in range(n):
        await spool.aput(RECORD, [PAYLOAD] * batch)
    spool.close()
    return n / (time.perf_counter() - t0)


async def with_aiosqlite(path: Path, n: int, batch: int) -> float:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, payload BLOB)")
        t0 = time.perf_counter()
        for _ in range(n):
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany("INSERT INTO items (kind, payload) VALUES (?, ?)", [(RECORD, PAYLOAD)] * batch)
            await db.execute("COMMIT")
        return n / (time.perf_counter() - t0)


async def measure(fn, path: Path, n: int, batch: int) -> tuple[float, float]:
    stop, worst = asyncio.Event(), [0.0]
    tick = asyncio.create_task(ticker(stop, worst))
    rate = await fn(path, n, batch)
    stop.set()
    await tick
    return rate, worst[0] * 1000


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        print(f"{'batch':>5} {'aiosqlite puts/s':>17} {'stall ms':>9} {'spool puts/s':>13} {'stall ms':>9} {'ratio':>6}")
        for batch in (1, 100):
            for k in range(2):  # interleaved, twice
                base, base_stall = await measure(with_aiosqlite, Path(d) / f"a{batch}{k}.db", n, batch)
                rate, stall = await measure(ours, Path(d) / f"s{batch}{k}.db", n, batch)
                print(f"{batch:>5} {base:>17,.0f} {base_stall:>9.2f} {rate:>13,.0f} {stall:>9.2f} {rate / base:>6.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    asyncio.run(main(ap.parse_args().n))
