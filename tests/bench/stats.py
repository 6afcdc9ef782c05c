"""Supervisor statistics benchmark (run by hand, not a test):

    CALLROUTER_TEST_PG_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python tests/bench/stats.py [--calls 1000000] [--runs 100]

1,000,000 calls over 12 months, 200 managers, 50,000 clients (one phone each) in a fresh
PostgreSQL database (migrated, then filled with COPY and ANALYZEd); timed through the same
store functions the API calls (store/stats.py), p50/p99 over `--runs`:
- baseline: a plain `SELECT count(*)` over one month's calls (the same index range);
- a second reference: the not-contacted query as it was before `last_answered` (an
  anti-join over the calls, `previous_not_contacted` below), on the same data;
- the monthly table of every manager with the team's totals (`manager_table`, what
  /api/stats/managers runs), and one manager's month as they see it (a different manager
  each run);
- the not-contacted list, all 50,000 clients checked (days=30), whole list and one owner's
  (the whole list max(20, runs/5) times).
Targets: monthly per-manager stats p99 < 300 ms; the not-contacted list < 1 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from callrouter import periods  # noqa: E402
from callrouter.store import Store, upgrade  # noqa: E402
from callrouter.store import stats as st  # noqa: E402
from callrouter.store.calls import REBUILD_LAST_ANSWERED  # noqa: E402

TZ = ZoneInfo("Europe/Moscow")
MANAGERS = [str(1000 + i) for i in range(200)]
CLIENTS = 50_000
START = datetime(2025, 12, 1, tzinfo=TZ).astimezone(UTC)
END = datetime(2026, 12, 1, tzinfo=TZ).astimezone(UTC)
CALL_COLS = ["pbx", "call_id", "direction", "caller_number", "callee_number", "client_id", "started_at",
             "answered_at", "ended_at", "ring_seconds", "talk_seconds", "duration_seconds", "outcome",
             "answered_by", "final_agent", "queue", "peer_number", "complete", "record"]


def phone(i: int) -> str:
    return f"+7916{i:07d}"


def generate(n: int, rnd: random.Random):
    """Rows for calls and call_legs. A third of the clients are quiet (rarely called), so
    the not-contacted list has something in it."""
    span = (END - START).total_seconds()
    active = int(CLIENTS * 2 / 3)
    calls, legs = [], []
    # in time order, as a live system writes them (a month's rows lie together on disk)
    times = sorted(START + timedelta(seconds=rnd.random() * span) for _ in range(n))
    for i, t in enumerate(times):
        c = rnd.randrange(active) if rnd.random() < 0.98 else rnd.randrange(active, CLIENTS)
        ring = round(rnd.uniform(1, 40), 2)
        inbound = rnd.random() < 0.7
        if inbound:
            outcome = rnd.choices(["answered", "missed", "abandoned", "busy"], [75, 12, 11, 2])[0]
            rang = rnd.sample(MANAGERS, rnd.choice([1, 1, 2]))
            ans = outcome == "answered"
            agent = rang[0] if ans else None
            cid, caller, callee = (f"c{c}" if rnd.random() < 0.8 else None), phone(c), "5550100"
        else:
            outcome = rnd.choices(["answered", "no-answer", "busy"], [65, 30, 5])[0]
            ans = outcome == "answered"
            agent = rnd.choice(MANAGERS)
            rang = []
            cid, caller, callee = None, None, phone(c)
        talk = round(rnd.uniform(10, 900), 2) if ans else 0.0
        end = t + timedelta(seconds=ring + talk)
        doc = {"schema": 1, "pbx": "main", "call_id": f"b{i}", "direction": "in" if inbound else "out",
               "caller": {"number": caller}, "callee": {"number": callee}, "client_id": cid,
               "started_at": t.isoformat(), "ended_at": end.isoformat(), "ring_seconds": ring, "talk_seconds": talk,
               "duration_seconds": ring + talk, "outcome": outcome, "answered_by": agent if inbound else None,
               "final_agent": agent}
        calls.append(("main", f"b{i}", "in" if inbound else "out", caller, callee, cid, t,
                      t + timedelta(seconds=ring) if ans else None, end, ring, talk, ring + talk, outcome,
                      agent if inbound else None, agent, rnd.choice(["sales", "retail", None]) if inbound else None,
                      phone(c), True, json.dumps(doc)))
        for seq, m in enumerate(rang):
            legs.append((i + 1, seq, m, f"PJSIP/{m}", ring, "answered" if m == agent else
                         ("answered-elsewhere" if ans else "no-answer")))
    return calls, legs


def previous_not_contacted(days: int, now: datetime):
    """The not-contacted statement before migration 0008 (store/stats.py at efb764d): a
    client is listed when no answered call since the cutoff has their id or one of their
    phones, and the last contact is searched in the calls. Kept here for comparison."""
    from sqlalchemy import exists, func, select

    from callrouter.store.schema import Call, ClientPhone, ClientRow
    calls, phones, cl = Call.__table__, ClientPhone.__table__, ClientRow.__table__.c
    cutoff = now - timedelta(days=days)
    k, p, k2, p2 = calls.alias("k"), phones.alias("p"), calls.alias("k2"), phones.alias("p2")
    recent_by_id = exists().where(k.c.client_id == cl.id, k.c.outcome == "answered", k.c.started_at >= cutoff)
    recent_by_phone = exists().select_from(p.join(k, k.c.peer_number == p.c.phone)).where(
        p.c.client_id == cl.id, k.c.outcome == "answered", k.c.started_at >= cutoff)
    last_by_id = (select(func.max(k2.c.started_at)).where(k2.c.client_id == cl.id, k2.c.outcome == "answered")
                  .scalar_subquery())
    last_by_phone = (select(func.max(k2.c.started_at)).select_from(p2.join(k2, k2.c.peer_number == p2.c.phone))
                     .where(p2.c.client_id == cl.id, k2.c.outcome == "answered").scalar_subquery())
    return (select(cl.id, cl.name, cl.owner_extension, cl.tier, last_by_id, last_by_phone)
            .where(~recent_by_id, ~recent_by_phone).order_by(cl.id))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def timed(runs: int, make) -> list[float]:
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        await make(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--keep", metavar="DB", help="fill database DB once and keep it (reused when it exists)")
    args = ap.parse_args()
    server = os.environ.get("CALLROUTER_TEST_PG_URL")
    if not server:
        sys.exit("set CALLROUTER_TEST_PG_URL")
    name = args.keep or f"cr_bench_{secrets.token_hex(4)}"
    u = make_url(server)
    dsn = dict(host=u.host, port=u.port or 5432, user=u.username, password=u.password)
    admin = await asyncpg.connect(database=u.database, **dsn)
    exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    if not exists:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = u.set(database=name).render_as_string(hide_password=False)
    try:
        if not exists:
            await fill(name, dsn, url, args.calls)
        await measure(url, args.runs)
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def fill(name: str, dsn: dict, url: str, n_calls: int) -> None:
    await upgrade(url)
    rnd = random.Random(17)
    t0 = time.perf_counter()
    calls, legs = generate(n_calls, rnd)
    gen_s = time.perf_counter() - t0
    conn = await asyncpg.connect(database=name, **dsn)
    t0 = time.perf_counter()
    await conn.copy_records_to_table("managers", records=[(m, f"Manager {m}", False) for m in MANAGERS],
                                     columns=["extension", "name", "dnd"])
    await conn.copy_records_to_table(
        "clients", records=[(f"c{i}", f"Client {i}", MANAGERS[i % 200], rnd.choice(["gold", "silver", None]), False,
                             False) for i in range(CLIENTS)],
        columns=["id", "name", "owner_extension", "tier", "problem", "blocked"])
    await conn.copy_records_to_table("client_phones", records=[(f"c{i}", phone(i)) for i in range(CLIENTS)],
                                     columns=["client_id", "phone"])
    await conn.copy_records_to_table("calls", records=calls, columns=CALL_COLS)
    await conn.copy_records_to_table("call_legs", records=legs,
                                     columns=["call_id", "seq", "agent", "device", "ring_seconds", "result"])
    # COPY goes around the call writer, which keeps last_answered: filled as migration
    # 0008 fills it from the calls already stored
    for sql in REBUILD_LAST_ANSWERED:
        await conn.execute(sql)
    # what autovacuum does to a loaded table: statistics, and the visibility map that
    # index-only scans need
    await conn.execute("VACUUM ANALYZE")
    load_s = time.perf_counter() - t0
    await conn.close()
    del calls, legs
    print(f"{n_calls:,} calls, {len(MANAGERS)} managers, {CLIENTS:,} clients: generated in {gen_s:.1f} s, "
          f"COPY + VACUUM ANALYZE {load_s:.1f} s", flush=True)


async def measure(url: str, runs: int) -> None:
    async with Store(url) as store:
        engine = store.engine
        p = periods.calendar_period("month", date(2026, 6, 1), TZ)
        days = periods.days_of(p, TZ)
        async with engine.connect() as c:
            n_month = await c.scalar(text("SELECT count(*) FROM calls WHERE started_at >= :a AND started_at < :b"),
                                     {"a": p.since, "b": p.until})
        print(f"month {p.label}: {n_month:,} calls")

        async def baseline(_: int) -> None:
            async with engine.connect() as c:
                await c.scalar(text("SELECT count(*) FROM calls WHERE started_at >= :a AND started_at < :b"),
                               {"a": p.since, "b": p.until})

        async def all_managers(_: int) -> None:
            await st.manager_table(engine, st.StatsScope(p, managers=MANAGERS), days)  # as the API does

        async def one_manager(i: int) -> None:
            m = MANAGERS[(i * 37) % 200]
            await st.manager_table(engine, st.StatsScope(p, manager=m, visible_to=m), days)  # a manager's own view

        now = END
        counts = {}

        lists = {}

        async def not_contacted(_: int) -> None:
            got = await st.run(engine, st.not_contacted, days=30, now=now, limit=1_000_000)
            counts["all"] = len(got)
            lists["now"] = {g.client_id: g.last_contact for g in got}

        async def previous(_: int) -> None:
            async def q(conn):
                return (await conn.execute(previous_not_contacted(30, now))).all()
            got = await st.run(engine, q)
            counts["previous"] = len(got)
            lists["previous"] = {cid: max((t for t in (a, b) if t is not None), default=None)
                                 for cid, _, _, _, a, b in got}

        async def not_contacted_owner(i: int) -> None:
            counts["one"] = len(await st.run(engine, st.not_contacted, days=30, now=now,
                                             owner=MANAGERS[(i * 37) % 200], limit=1_000_000))

        print(f"load average before: {open('/proc/loadavg').read().strip()}", flush=True)
        rows = []
        for label, fn, n in (("baseline: SELECT count(*) over the month", baseline, runs),
                             ("monthly stats, all 200 managers + team", all_managers, runs),
                             ("monthly stats, one manager", one_manager, runs),
                             ("not contacted 30 days, all clients", not_contacted, max(20, runs // 5)),
                             ("reference: the previous not-contacted query (anti-join over the calls)", previous,
                              max(20, runs // 5)),
                             ("not contacted 30 days, one owner", not_contacted_owner, runs)):
            await fn(0)  # warm
            xs = await timed(n, fn)
            rows.append((label, n, statistics.median(xs), pct(xs, 99)))
        print(f"load average after: {open('/proc/loadavg').read().strip()}")
        base = rows[0][2]
        print(f"\n| query | runs | p50 ms | p99 ms | p50 vs baseline |\n| --- | --- | --- | --- | --- |")
        for label, runs, p50, p99 in rows:
            print(f"| {label} | {runs} | {p50:.1f} | {p99:.1f} | {p50 / base:.1f}× |")
        print(f"\nnot contacted for 30 days: {counts['all']:,} clients in all ({counts['previous']:,} by the previous "
              f"query), {counts['one']} of one owner; the two lists (client, last contact) are "
              f"{'the same' if lists['now'] == lists['previous'] else 'DIFFERENT'}")


if __name__ == "__main__":
    asyncio.run(main())
