"""Supervisors' statistics (store/stats.py) on a generated month of calls, on SQLite and
PostgreSQL. The right figures are computed here independently, in plain Python over the
generated records, from the definitions in docs/design.md ("Supervisor statistics")."""
from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callrouter import periods
from callrouter.records import CallRecord, Leg, Party
from callrouter.store import Client, Store
from callrouter.store import stats as st
from callrouter.store.supervise import DealDay, list_deals, upsert_deals

TZ = ZoneInfo("Europe/Moscow")
MANAGERS = ["101", "102", "103", "104", "105"]
TIERS = ["gold", "silver", None]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def make_clients(rnd: random.Random) -> list[Client]:
    out = []
    for i in range(30):
        out.append(Client(id=f"c{i:02d}", name=f"Client {i}", owner_extension=rnd.choice(MANAGERS + [None]),
                          tier=rnd.choice(TIERS), phones=(f"+7916{i:07d}",) + ((f"+7495{i:07d}",) if i % 3 == 0 else ())))
    return out


def make_calls(rnd: random.Random, clients: list[Client]) -> list[CallRecord]:
    start = datetime(2026, 10, 25, tzinfo=UTC)
    calls = []
    for n in range(400):
        t = start + timedelta(seconds=rnd.randrange(0, 40 * 86400))
        client = rnd.choice(clients + [None] * 5)
        phone = rnd.choice(client.phones) if client else f"+7999{rnd.randrange(10**7):07d}"
        ring = round(rnd.uniform(1, 30), 2)
        talk = round(rnd.uniform(5, 600), 2)
        queue = rnd.choice(["sales", "retail", None])
        if rnd.random() < 0.7:
            outcome = rnd.choice(["answered"] * 5 + ["missed", "missed", "abandoned", "abandoned", "busy"])
            rang = rnd.sample(MANAGERS, rnd.choice([0, 1, 1, 2, 3])) if outcome != "answered" else \
                rnd.sample(MANAGERS, rnd.choice([1, 2]))
            answered_by = rang[0] if outcome == "answered" else None
            final = answered_by
            if answered_by and rnd.random() < 0.2:
                final = rnd.choice(MANAGERS)
            legs = tuple(Leg(agent=m, device=f"PJSIP/{m}", ring_seconds=ring,
                             result=("answered" if m == answered_by else
                                     "answered-elsewhere" if answered_by else "no-answer"), queue=queue)
                         for m in rang)
            if rang and rnd.random() < 0.1:   # the same manager rang twice on one call
                legs += (Leg(agent=rang[0], device=f"PJSIP/{rang[0]}", ring_seconds=ring, result="no-answer"),)
            # a routed call carries the client id; some known callers came unrouted
            cid = client.id if client and rnd.random() < 0.8 else None
            ans = outcome == "answered"
            rec = CallRecord(pbx="lab", call_id=f"in{n}", direction="in", caller=Party(number=phone, raw=phone),
                             callee=Party(raw="5550100"), client_id=cid, started_at=t,
                             answered_at=t + timedelta(seconds=ring) if ans else None,
                             ended_at=t + timedelta(seconds=ring + (talk if ans else 0)),
                             ring_seconds=ring, talk_seconds=talk if ans else 0.0,
                             duration_seconds=ring + (talk if ans else 0), outcome=outcome,
                             answered_by=answered_by, final_agent=final, queue=queue, legs=legs)
        else:
            outcome = rnd.choice(["answered", "answered", "no-answer", "busy"])
            m = rnd.choice(MANAGERS)
            ans = outcome == "answered"
            rec = CallRecord(pbx="lab", call_id=f"out{n}", direction="out", caller=Party(raw=m),
                             callee=Party(number=phone, raw=phone), started_at=t,
                             answered_at=t + timedelta(seconds=ring) if ans else None,
                             ended_at=t + timedelta(seconds=ring + (talk if ans else 0)), ring_seconds=ring,
                             talk_seconds=talk if ans else 0.0, duration_seconds=ring + (talk if ans else 0),
                             outcome=outcome, final_agent=m, agent=m)
        calls.append(rec)
    # an internal call: counted nowhere
    calls.append(CallRecord(pbx="lab", call_id="int1", direction="internal", caller=Party(raw="101"),
                            callee=Party(raw="102"), started_at=datetime(2026, 11, 10, 9, tzinfo=UTC),
                            ended_at=datetime(2026, 11, 10, 9, 1, tzinfo=UTC), ring_seconds=2, talk_seconds=58,
                            duration_seconds=60, outcome="answered", answered_by="102", final_agent="102"))
    return calls


# ------------------------------------------------------------------ the expected figures
def peer(r: CallRecord) -> str | None:
    return r.caller.number if r.direction == "in" else r.callee.number if r.direction == "out" else None


def called_back(r: CallRecord, calls: list[CallRecord]) -> bool:
    for k in calls:
        if k.outcome == "answered" and k.started_at > r.started_at and (
                (r.client_id is not None and k.client_id == r.client_id)
                or (peer(r) is not None and peer(k) == peer(r))):
            return True
    return False


def involves(r: CallRecord, m: str) -> bool:
    return r.answered_by == m or r.final_agent == m or any(leg.agent == m for leg in r.legs)


def figures(rows: list[CallRecord], calls: list[CallRecord]) -> dict:
    f = defaultdict(float)
    for r in rows:
        if r.direction == "in":
            f["inbound"] += 1
            if r.outcome == "answered":
                f["inbound_answered"] += 1
                f["ring_total"] += r.ring_seconds
                f["ring_count"] += 1
            if r.outcome in ("missed", "abandoned"):
                f[r.outcome] += 1
                f["callbacks_done" if called_back(r, calls) else "callbacks_open"] += 1
        elif r.direction == "out":
            f["outbound"] += 1
            f["outbound_answered"] += r.outcome == "answered"
        if r.direction in ("in", "out") and r.outcome == "answered":
            f["talk_total"] += r.talk_seconds
            f["talk_count"] += 1
    return f


def manager_figures(m: str, rows: list[CallRecord], calls: list[CallRecord]) -> dict:
    f = defaultdict(float)
    for r in rows:
        if r.direction == "in" and r.outcome == "answered" and r.answered_by == m:
            f["inbound"] += 1
            f["inbound_answered"] += 1
            f["ring_total"] += r.ring_seconds
            f["ring_count"] += 1
            f["talk_total"] += r.talk_seconds
            f["talk_count"] += 1
        elif r.direction == "in" and r.outcome != "answered" and any(leg.agent == m for leg in r.legs):
            f["inbound"] += 1
            if r.outcome in ("missed", "abandoned"):
                f[r.outcome] += 1
                f["callbacks_done" if called_back(r, calls) else "callbacks_open"] += 1
        elif r.direction == "out" and r.final_agent == m:
            f["outbound"] += 1
            if r.outcome == "answered":
                f["outbound_answered"] += 1
                f["talk_total"] += r.talk_seconds
                f["talk_count"] += 1
    return f


FIELDS = ("inbound", "inbound_answered", "missed", "abandoned", "outbound", "outbound_answered", "ring_count",
          "talk_count", "callbacks_done", "callbacks_open")


def check(agg: st.Aggregate, want: dict) -> None:
    for k in FIELDS:
        assert getattr(agg, k) == want.get(k, 0), (agg.key, k)
    assert getattr(agg, "ring_total") == pytest.approx(want.get("ring_total", 0.0))
    assert getattr(agg, "talk_total") == pytest.approx(want.get("talk_total", 0.0))


@pytest.fixture
async def dataset(store: Store):
    rnd = random.Random(17)
    clients = make_clients(rnd)
    calls = make_calls(rnd, clients)
    await store.upsert_clients(clients)
    await store.save_calls(calls)
    return store, clients, calls


def in_period(calls: list[CallRecord], p: periods.Period) -> list[CallRecord]:
    return [r for r in calls if p.since <= r.started_at < p.until]


async def test_month_per_manager_team_tier_queue(dataset) -> None:
    store, clients, calls = dataset
    p = periods.calendar_period("month", date(2026, 11, 17), TZ)
    assert p.since == datetime(2026, 10, 31, 21, tzinfo=UTC) and p.until == datetime(2026, 11, 30, 21, tzinfo=UTC)
    rows = in_period(calls, p)
    assert 200 < len(rows) < len(calls)  # the period cuts the data set
    await upsert_deals(store.engine, [DealDay("101", date(2026, 11, 1), 2), DealDay("101", date(2026, 11, 30), 3),
                                      DealDay("101", date(2026, 12, 1), 50), DealDay("102", date(2026, 10, 31), 9)])
    await upsert_deals(store.engine, [DealDay("101", date(2026, 11, 1), 4)])  # a re-push replaces
    scope = st.StatsScope(p, managers=MANAGERS)

    per = await st.run(store.engine, st.per_manager, scope, periods.days_of(p, TZ))
    assert [a.key for a in per] == MANAGERS
    for a in per:
        check(a, manager_figures(a.key, rows, calls))
    assert {a.key: a.deals for a in per} == {"101": 7, "102": 0, "103": 0, "104": 0, "105": 0}

    team = await st.run(store.engine, st.team, scope)
    check(team, figures(rows, calls))

    tier_of = {c.id: c.tier for c in clients}
    by_tier = await st.run(store.engine, st.grouped, scope, "tier")
    want_tiers = defaultdict(list)
    for r in rows:
        want_tiers[tier_of.get(r.client_id) if r.client_id else None].append(r)
    assert [a.key for a in by_tier] == sorted((k for k in want_tiers if k), key=str) + [None]
    for a in by_tier:
        check(a, figures(want_tiers[a.key], calls))

    by_queue = await st.run(store.engine, st.grouped, scope, "queue")
    want_q = defaultdict(list)
    for r in rows:
        want_q[r.queue].append(r)
    assert {a.key for a in by_queue} == set(want_q)
    for a in by_queue:
        check(a, figures(want_q[a.key], calls))


def approx(a: st.Aggregate) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in ((k, getattr(a, k)) for k in a.__slots__)}


@pytest.mark.parametrize("who", [None, "102"])
async def test_the_managers_table_is_per_manager_and_team_at_once(dataset, who) -> None:
    store, _, calls = dataset
    p = periods.calendar_period("month", date(2026, 11, 5), TZ)
    scope = st.StatsScope(p, managers=MANAGERS, manager=who, visible_to=who)
    per, team = await st.manager_table(store.engine, scope, periods.days_of(p, TZ))
    # the same figures (sums of floats may differ in the last bits: summed in another order)
    assert [approx(a) for a in per] == [approx(a) for a in
                                        await st.run(store.engine, st.per_manager, scope, periods.days_of(p, TZ))]
    assert approx(team) == approx(await st.run(store.engine, st.team, scope))
    rows = in_period(calls, p)
    check(team, figures([r for r in rows if who is None or involves(r, who)], calls))
    assert team.callbacks_done and team.callbacks_open  # the check above can fail both ways


async def test_a_manager_sees_their_own_figures_only(dataset) -> None:
    store, _, calls = dataset
    p = periods.calendar_period("week", date(2026, 11, 12), TZ)
    assert p.label == "2026-W46"
    rows = in_period(calls, p)
    per = await st.run(store.engine, st.per_manager, st.StatsScope(p, visible_to="103", managers=MANAGERS),
                       periods.days_of(p, TZ))
    assert [a.key for a in per] == ["103"]
    check(per[0], manager_figures("103", rows, calls))
    team = await st.run(store.engine, st.team, st.StatsScope(p, visible_to="103"))
    check(team, figures([r for r in rows if involves(r, "103")], calls))


@pytest.mark.parametrize("zone", ["Europe/Moscow", "Asia/Kolkata"])
async def test_hours_of_day_and_days_in_the_pbx_zone(dataset, zone: str) -> None:
    store, _, calls = dataset
    tz = ZoneInfo(zone)
    p = periods.calendar_period("month", date(2026, 11, 1), tz)
    rows = in_period(calls, p)
    got = await st.run(store.engine, st.buckets, st.StatsScope(p))
    hours = periods.by_hour_of_day(got, tz)
    want = [0] * 24
    for r in rows:
        want[r.started_at.astimezone(tz).hour] += 1
    assert [h.inbound + h.outbound for h in hours] == [
        sum(1 for r in rows if r.started_at.astimezone(tz).hour == h and r.direction != "internal") for h in range(24)]
    assert [h.missed for h in hours] == [
        sum(1 for r in rows if r.started_at.astimezone(tz).hour == h and r.direction == "in" and r.outcome == "missed")
        for h in range(24)]
    days = periods.by_day(got, tz, p)
    assert len(days) == 30 and days[0][0] == date(2026, 11, 1)
    for d, counts in days:
        assert counts.answered == sum(1 for r in rows if r.started_at.astimezone(tz).date() == d
                                      and r.outcome == "answered" and r.direction != "internal"), d


@pytest.mark.parametrize("days", [3, 10, 30])
async def test_not_contacted_for_n_days(dataset, days: int) -> None:
    store, clients, calls = dataset
    cutoff = NOW - timedelta(days=days)

    def contacts(cl: Client) -> list[datetime]:
        return [r.started_at for r in calls if r.outcome == "answered" and r.direction in ("in", "out")
                and (r.client_id == cl.id or peer(r) in cl.phones)]

    want = {cl.id: max(contacts(cl), default=None) for cl in clients
            if not any(t >= cutoff for t in contacts(cl))}
    got = await st.run(store.engine, st.not_contacted, days=days, now=NOW)
    assert {g.client_id: g.last_contact for g in got} == want
    if days == 3:
        assert want  # the check can fail: someone was not called
    owned = await st.run(store.engine, st.not_contacted, days=days, now=NOW, owner="101")
    assert {g.client_id for g in owned} == {k for k in want if next(c for c in clients if c.id == k).owner_extension == "101"}
    # pages by client id
    first = await st.run(store.engine, st.not_contacted, days=days, now=NOW, limit=2)
    rest = await st.run(store.engine, st.not_contacted, days=days, now=NOW, after=first[-1].client_id) if first else []
    assert [g.client_id for g in first + rest] == sorted(want)


async def test_missed_calls_without_a_callback(dataset) -> None:
    store, _, calls = dataset
    p = periods.calendar_period("month", date(2026, 11, 1), TZ)
    rows = in_period(calls, p)
    want = {r.call_id for r in rows if r.direction == "in" and r.outcome in ("missed", "abandoned")
            and not called_back(r, calls)}
    assert want and len(want) < sum(1 for r in rows if r.outcome in ("missed", "abandoned"))
    got = await st.run(store.engine, st.not_called_back, st.StatsScope(p), limit=1000)
    assert {r.call_id for _, r in got} == want
    mine = await st.run(store.engine, st.not_called_back, st.StatsScope(p, visible_to="102"), limit=1000)
    assert {r.call_id for _, r in mine} == {r.call_id for r in rows if r.call_id in want and involves(r, "102")}


def rewritten(r: CallRecord, **changes) -> CallRecord:
    return CallRecord.model_validate({**r.to_dict(), **changes})


async def last_answered_rows(store: Store) -> dict[tuple[str, str], datetime]:
    from sqlalchemy import select

    from callrouter.store.schema import LastAnswered
    t = LastAnswered.__table__
    async with store.engine.connect() as conn:
        return {(k, key): at for k, key, at in await conn.execute(select(t.c.kind, t.c.key, t.c.started_at))}


def want_last_answered(calls: list[CallRecord]) -> dict[tuple[str, str], datetime]:
    out: dict[tuple[str, str], datetime] = {}
    for r in calls:
        if r.outcome == "answered" and r.started_at is not None:
            for k in (("client", r.client_id), ("number", peer(r))):
                if k[1] is not None and (k not in out or r.started_at > out[k]):
                    out[k] = r.started_at
    return out


async def test_calls_stored_again_or_rewritten_keep_called_back_and_last_contact_exact(dataset) -> None:
    """`last_answered` is kept by the call writer: a record stored twice, in one batch or
    in two, changes nothing; a stored answered call rewritten as missed, with another
    client, or earlier, lowers its keys' latest call where it was the latest."""
    store, clients, calls = dataset
    first = want_last_answered(calls)
    assert await last_answered_rows(store) == first
    rnd = random.Random(5)
    await store.save_calls(rnd.sample(calls, 60) * 2)   # replays, each twice in the batch
    assert await last_answered_rows(store) == want_last_answered(calls)

    # rewrite the latest answered calls of some clients and numbers (those lower the keys)
    answered = sorted((r for r in calls if r.outcome == "answered" and r.direction == "in"),
                      key=lambda r: r.started_at, reverse=True)
    now_by_id = {r.call_id: r for r in calls}
    changed = []
    for i, r in enumerate(answered[:45]):
        if i % 3 == 0:     # answered → missed
            new = rewritten(r, outcome="missed", answered_by=None, final_agent=None, answered_at=None,
                            talk_seconds=0.0, legs=[{**leg.model_dump(), "result": "no-answer"} for leg in r.legs])
        elif i % 3 == 1:   # another client and number
            other = clients[(i * 7) % len(clients)]
            new = rewritten(r, client_id=other.id, caller={"number": other.phones[0], "raw": other.phones[0]})
        else:              # an earlier start (the record completed after an outage)
            new = rewritten(r, started_at=(r.started_at - timedelta(days=9)).isoformat())
        now_by_id[r.call_id] = new
        changed.append(new)
    await store.save_calls(changed[:20])
    await store.save_calls(changed[20:] + changed[:5])
    calls = list(now_by_id.values())
    last = await last_answered_rows(store)
    assert last == want_last_answered(calls)
    # the rewrites lowered or removed keys (what GREATEST alone would have got wrong)
    assert any(k not in last or last[k] < t for k, t in first.items())

    # the figures that read it, computed independently from the rewritten calls
    p = periods.calendar_period("month", date(2026, 11, 1), TZ)
    rows = in_period(calls, p)
    team = await st.run(store.engine, st.team, st.StatsScope(p))
    check(team, figures(rows, calls))
    per, whole = await st.manager_table(store.engine, st.StatsScope(p, managers=MANAGERS), periods.days_of(p, TZ))
    for a in per:
        check(a, manager_figures(a.key, rows, calls))
    check(whole, figures(rows, calls))
    got = await st.run(store.engine, st.not_called_back, st.StatsScope(p), limit=1000)
    assert {r.call_id for _, r in got} == {r.call_id for r in rows if r.direction == "in"
                                           and r.outcome in ("missed", "abandoned") and not called_back(r, calls)}
    cutoff = NOW - timedelta(days=10)

    def contacts(cl: Client) -> list[datetime]:
        return [r.started_at for r in calls if r.outcome == "answered" and (r.client_id == cl.id or peer(r) in cl.phones)]
    want = {cl.id: max(contacts(cl), default=None) for cl in clients if not any(t >= cutoff for t in contacts(cl))}
    got_nc = await st.run(store.engine, st.not_contacted, days=10, now=NOW)
    assert {g.client_id: g.last_contact for g in got_nc} == want


async def test_deals_upsert_is_idempotent(store: Store) -> None:
    items = [DealDay("101", date(2026, 11, 2), 1), DealDay("102", date(2026, 11, 2), 5)]
    assert await upsert_deals(store.engine, items) == 2
    await upsert_deals(store.engine, items)
    await upsert_deals(store.engine, [DealDay("101", date(2026, 11, 2), 3)])
    got = await list_deals(store.engine, date(2026, 11, 1), date(2026, 11, 30))
    assert got == [DealDay("101", date(2026, 11, 2), 3), DealDay("102", date(2026, 11, 2), 5)]


def test_periods_in_a_zone_with_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    day = periods.calendar_period("day", date(2026, 10, 25), berlin)   # 25 hours long
    assert day.until - day.since == timedelta(hours=25)
    week = periods.calendar_period("week", date(2026, 10, 28), berlin)
    assert week.since == datetime(2026, 10, 25, 23, tzinfo=UTC)  # Monday 00:00 CET, after the change and week.label == "2026-W44"
    with pytest.raises(ValueError):
        periods.range_period(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
