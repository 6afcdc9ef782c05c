"""Client import benchmark (run by hand, not a test):

    CALLROUTER_TEST_PG_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python tests/bench/import.py [--rows 1000000]

Writes a CSV of --rows clients as a Russian spreadsheet would (`;`, a BOM, decimal commas,
phones in national and international forms, a third of the clients with two phones) and
imports it into a fresh PostgreSQL database (created on the server of
CALLROUTER_TEST_PG_URL, dropped at the end). Measured in the same run:
  baseline csv     Python's csv.reader over the file, nothing else;
  baseline COPY    PostgreSQL's COPY of the same file into a table of text columns
                   (no validation, no phone normalization, no index but nothing);
  import           `callrouter import clients FILE` as a user runs it (a child process):
                   wall time, rows/s and peak RSS (the largest of its processes, and all
                   of them together: it parses in a process of its own);
  import again     the same file once more: idempotent, nothing changes (checked).
Target: the import under 60 s with RSS under 500 MB.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from callrouter.store import upgrade

OWNERS = [str(e) for e in range(101, 121)]


def write_csv(path: Path, rows: int) -> None:
    rnd = random.Random(15)
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["id", "name", "phones", "owner_extension", "monthly_turnover", "tier", "problem", "blocked"])
        for i in range(rows):
            phones = f"8 (916) {i // 10000:03d}-{i // 100 % 100:02d}-{i % 100:02d}"
            if i % 3 == 0:
                phones += f", +7 495 {i // 10000:03d} {i // 100 % 100:02d} {i % 100:02d}"
            turnover = f"{rnd.randrange(0, 5_000_000):,}".replace(",", " ") + f",{rnd.randrange(100):02d}"
            w.writerow([f"c-{i:07d}", f"Клиент №{i} ООО «Ромашка»", phones,
                        OWNERS[i % len(OWNERS)] if i % 4 else "", turnover if i % 5 else "",
                        "wholesale" if i % 7 == 0 else "", "да" if i % 50 == 0 else "нет",
                        "1" if i % 97 == 0 else "0"])


def baseline_csv(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    with open(path, encoding="utf-8-sig", newline="") as f:
        n = sum(1 for _ in csv.reader(f, delimiter=";")) - 1
    return time.perf_counter() - t0, n


async def baseline_copy(dsn: str, path: Path) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE UNLOGGED TABLE bench_copy (id text, name text, phones text, owner text, "
                           "turnover text, tier text, problem text, blocked text)")
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            await conn.copy_to_table("bench_copy", source=f, format="csv", header=True, delimiter=";",
                                     encoding="UTF8")
        elapsed = time.perf_counter() - t0
        await conn.execute("DROP TABLE bench_copy")
        return elapsed
    finally:
        await conn.close()


def _tree_rss_kb(pid: int) -> int:
    """RSS of a process and all its descendants (Linux /proc), in KB; 0 once it is gone."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_import(config: Path, path: Path) -> tuple[float, int, int, str]:
    """The CLI in a child process: wall seconds, peak RSS (KB) of the largest process of
    the import (ru_maxrss; the import parses in a child process of its own), peak RSS of
    all its processes together (sampled every 0.1 s), its summary line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "callrouter.cli", "--config", str(config), "import", "clients",
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree_peak = 0
    while proc.poll() is None:
        tree_peak = max(tree_peak, _tree_rss_kb(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"import failed ({proc.returncode}):\n{out}\n{err[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: only meaningful if it grew
    return elapsed, max(peak, before), tree_peak, out.strip().splitlines()[0]


async def counts(dsn: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return (await conn.fetchval("SELECT count(*) FROM clients"),
                await conn.fetchval("SELECT count(*) FROM client_phones"),
                await conn.fetchval("SELECT count(*) FROM client_changes"))
    finally:
        await conn.close()


async def pg(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    server = os.environ.get("CALLROUTER_TEST_PG_URL")
    if not server:
        sys.exit("set CALLROUTER_TEST_PG_URL (postgresql+asyncpg://...) to a server this bench may "
                 "create a database on")
    name = f"cr_bench_{secrets.token_hex(4)}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    server_dsn = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clients.csv"
        t0 = time.perf_counter()
        write_csv(path, args.rows)
        print(f"{args.rows:,} clients, {path.stat().st_size / 1e6:.0f} MB CSV written in "
              f"{time.perf_counter() - t0:.1f} s")
        config = Path(tmp) / "callrouter.toml"
        managers = "".join(f'[[managers]]\nextension = "{e}"\n' for e in OWNERS)
        config.write_text(f'database_url = "{url}"\n{managers}')
        asyncio.run(pg(server_dsn, f'CREATE DATABASE "{name}"'))
        try:
            asyncio.run(upgrade(url))
            asyncio.run(pg(dsn, "INSERT INTO managers (extension) SELECT unnest($$"
                                + "{" + ",".join(OWNERS) + "}$$::text[])"))
            csv_s, n = baseline_csv(path)
            copy_s = asyncio.run(baseline_copy(dsn, path))
            load_before = os.getloadavg()[0]
            imp_s, rss_kb, tree_kb, line = run_import(config, path)
            c1 = asyncio.run(counts(dsn))
            again_s, rss2_kb, tree2_kb, line2 = run_import(config, path)
            c2 = asyncio.run(counts(dsn))
        finally:
            asyncio.run(pg(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert c1[0] == n, f"{c1[0]} clients stored, {n} in the file"
    assert c2 == c1, f"the second import changed something: {c1} -> {c2}"
    print(f"first import:  {line}")
    print(f"second import: {line2}")
    print(f"stored: {c1[0]:,} clients, {c1[1]:,} phones, {c1[2]:,} change-feed rows (unchanged by the 2nd run)")
    print()
    print("| path | seconds | rows/s | vs COPY |")
    print("| --- | --- | --- | --- |")
    for label, s in (("baseline: csv.reader pass", csv_s), ("baseline: PostgreSQL COPY of the file", copy_s),
                     ("**callrouter import clients** (first run)", imp_s), ("same file again (no changes)", again_s)):
        print(f"| {label} | {s:.1f} | {n / s:,.0f} | {s / copy_s:.1f}× |")
    print()
    tree = max(tree_kb, tree2_kb)
    print(f"peak RSS: largest process of the import {max(rss_kb, rss2_kb) / 1024:.0f} MB, all its processes "
          f"together {tree / 1024:.0f} MB (target < 500 MB); 1-min load average {load_before:.1f} before "
          f"the imports, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores; target < 60 s"
          f"{'' if n == 1_000_000 else ' (scaled to 1,000,000 rows)'}: "
          f"{'met' if imp_s * 1_000_000 / n < 60 and tree < 500 * 1024 else 'MISSED'}")


if __name__ == "__main__":
    main()
