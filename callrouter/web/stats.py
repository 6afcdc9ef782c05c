"""/api/stats/*: supervisors' statistics (store/stats.py) for a period of the PBX's
calendar or any range, each table also as CSV. A manager gets their own figures only
(the calls that involve them); asking for another manager's is 403."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from callrouter import periods
from callrouter.store import stats as st

from .app import ApiError, Ctx, Route, read_query
from .calls import _before, _cursor
from .csvout import CALL_COLUMNS, call_row, csv_response, wants_csv
from .supmodels import (
    CountsRow,
    ManagerStatsRow,
    ManagerStatsTable,
    MissedPage,
    MissedQuery,
    NotContactedPage,
    NotContactedQuery,
    NotContactedRow,
    PeriodOut,
    SeriesTable,
    StatsQuery,
    StatsRow,
    StatsTable,
)

STATS_COLUMNS = tuple(StatsRow.model_fields)
MANAGER_COLUMNS = ("key", "name", *STATS_COLUMNS[1:], "deals", "calls_per_deal")
COUNTS_COLUMNS = tuple(CountsRow.model_fields)
NOT_CONTACTED_COLUMNS = tuple(NotContactedRow.model_fields)


def zone(ctx: Ctx) -> ZoneInfo:
    return ZoneInfo(ctx.daemon.settings.timezone)


def resolve(q: StatsQuery, ctx: Ctx) -> periods.Period:
    if q.since is not None and q.until is not None:
        return periods.range_period(q.since, q.until)
    day = q.date or periods.today(datetime.now(UTC), zone(ctx))
    return periods.calendar_period(q.period, day, zone(ctx))


def scope(q: StatsQuery, ctx: Ctx, managers: Iterable[str] = ()) -> st.StatsScope:
    own = ctx.own_extension
    if own is not None and q.manager not in (None, own):
        raise ApiError(403, "a manager sees their own figures only", field="manager")
    return st.StatsScope(resolve(q, ctx), visible_to=own, manager=q.manager or own, pbx=q.pbx,
                         managers=tuple(managers))


def period_out(p: periods.Period, ctx: Ctx) -> PeriodOut:
    return PeriodOut(label=p.label, since=p.since, until=p.until, timezone=ctx.daemon.settings.timezone)


def row(a: st.Aggregate) -> StatsRow:
    return StatsRow(key=a.key, inbound=a.inbound, inbound_answered=a.inbound_answered, missed=a.missed,
                    abandoned=a.abandoned, outbound=a.outbound, outbound_answered=a.outbound_answered,
                    ring_total_seconds=round(a.ring_total, 3), ring_avg_seconds=_r(periods.mean(a.ring_total, a.ring_count)),
                    talk_total_seconds=round(a.talk_total, 3), talk_avg_seconds=_r(periods.mean(a.talk_total, a.talk_count)),
                    callbacks_done=a.callbacks_done, callbacks_open=a.callbacks_open)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


async def _rows(items: Iterable[Any]) -> AsyncIterator[dict[str, Any]]:
    for it in items:
        yield it.model_dump(mode="json")


async def _table(request: web.Request, q: StatsQuery, name: str, columns: tuple[str, ...], out: Any) -> Any:
    if wants_csv(request, q.format):
        return await csv_response(request, f"{name}-{out.period.label.replace('/', '_')}.csv", columns,
                                  _rows(out.items))
    return out


async def manager_table(ctx: Ctx, q: StatsQuery) -> ManagerStatsTable:
    staff = ctx.own_extension is None
    managers = await ctx.store.list_managers() if staff else []
    names = {m.extension: m.name for m in managers}
    s = scope(q, ctx, names)
    days = periods.days_of(s.period, zone(ctx))
    per, team = await st.manager_table(ctx.store.engine, s, days)
    items = []
    for a in per:
        handled = a.inbound_answered + a.outbound
        items.append(ManagerStatsRow(**row(a).model_dump(), name=names.get(a.key or ""), deals=a.deals or 0,
                                     calls_per_deal=_r(periods.ratio(handled, a.deals or 0))))
    return ManagerStatsTable(period=period_out(s.period, ctx), team=row(team), items=items)


async def managers_stats(request: web.Request, ctx: Ctx) -> Any:
    q: StatsQuery = read_query(request, StatsQuery)
    return await _table(request, q, "managers", MANAGER_COLUMNS, await manager_table(ctx, q))


def _grouped(by: str):
    async def handler(request: web.Request, ctx: Ctx) -> Any:
        q: StatsQuery = read_query(request, StatsQuery)
        s = scope(q, ctx)
        groups = await st.run(ctx.store.engine, st.grouped, s, by)
        return await _table(request, q, f"{by}s", STATS_COLUMNS,
                            StatsTable(period=period_out(s.period, ctx), items=[row(a) for a in groups]))
    handler.__name__ = f"{by}_stats"
    return handler


async def hours(request: web.Request, ctx: Ctx) -> Any:
    q: StatsQuery = read_query(request, StatsQuery)
    s = scope(q, ctx)
    b = await st.run(ctx.store.engine, st.buckets, s)
    items = [CountsRow(key=f"{h:02d}", **_counts(c)) for h, c in enumerate(periods.by_hour_of_day(b, zone(ctx)))]
    return await _table(request, q, "hours", COUNTS_COLUMNS, SeriesTable(period=period_out(s.period, ctx), items=items))


async def days(request: web.Request, ctx: Ctx) -> Any:
    q: StatsQuery = read_query(request, StatsQuery)
    s = scope(q, ctx)
    first, last = periods.days_of(s.period, zone(ctx))
    if (last - first).days > 400:
        raise ApiError(400, "days: at most 400 days per series", field="until")
    b = await st.run(ctx.store.engine, st.buckets, s)
    items = [CountsRow(key=d.isoformat(), **_counts(c)) for d, c in periods.by_day(b, zone(ctx), s.period)]
    return await _table(request, q, "days", COUNTS_COLUMNS, SeriesTable(period=period_out(s.period, ctx), items=items))


def _counts(c: periods.Counts) -> dict[str, int]:
    return {"inbound": c.inbound, "outbound": c.outbound, "answered": c.answered, "missed": c.missed,
            "abandoned": c.abandoned}


async def not_contacted(request: web.Request, ctx: Ctx) -> Any:
    q: NotContactedQuery = read_query(request, NotContactedQuery)
    own = ctx.own_extension
    if own is not None and q.owner not in (None, own):
        raise ApiError(403, "a manager sees their own clients only", field="owner")
    owner = own or q.owner
    now = datetime.now(UTC)

    def out(n: st.NotContacted) -> NotContactedRow:
        return NotContactedRow(client_id=n.client_id, name=n.name, owner_extension=n.owner_extension, tier=n.tier,
                               last_contact=n.last_contact)

    if wants_csv(request, q.format):
        async def rows() -> AsyncIterator[dict[str, Any]]:
            after = q.cursor
            while page := await st.run(ctx.store.engine, st.not_contacted, days=q.days, now=now, owner=owner,
                                       after=after, limit=1000):
                for n in page:
                    yield out(n).model_dump(mode="json")
                after = page[-1].client_id
        return await csv_response(request, f"not-contacted-{q.days}d.csv", NOT_CONTACTED_COLUMNS, rows())
    page = await st.run(ctx.store.engine, st.not_contacted, days=q.days, now=now, owner=owner, after=q.cursor,
                        limit=q.limit)
    return NotContactedPage(items=[out(n) for n in page],
                            next_cursor=page[-1].client_id if len(page) == q.limit else None)


async def not_called_back(request: web.Request, ctx: Ctx) -> Any:
    q: MissedQuery = read_query(request, MissedQuery)
    s = scope(q, ctx)
    before = _before(q.cursor)
    if wants_csv(request, q.format):
        async def rows() -> AsyncIterator[dict[str, Any]]:
            b = before
            while page := await st.run(ctx.store.engine, st.not_called_back, s, before=b, limit=500):
                for _, record in page:
                    yield call_row(record.to_dict())
                b = page[-1][0]
        return await csv_response(request, "not-called-back.csv", CALL_COLUMNS, rows())
    page = await st.run(ctx.store.engine, st.not_called_back, s, before=before, limit=q.limit)
    return MissedPage(items=[r for _, r in page], next_cursor=_cursor(page[-1][0]) if len(page) == q.limit else None)


ROUTES = [
    Route("GET", "/api/stats/managers", managers_stats,
          "Per manager: inbound/outbound, answered, missed, abandoned, ring and talk time, callbacks, deals, calls "
          "per deal; and the team's totals", query=StatsQuery, response=ManagerStatsTable, csv=True, tag="stats"),
    Route("GET", "/api/stats/tiers", _grouped("tier"), "The same figures per client tier", query=StatsQuery,
          response=StatsTable, csv=True, tag="stats"),
    Route("GET", "/api/stats/queues", _grouped("queue"), "The same figures per queue", query=StatsQuery,
          response=StatsTable, csv=True, tag="stats"),
    Route("GET", "/api/stats/hours", hours, "Calls per hour of day (PBX time zone)", query=StatsQuery,
          response=SeriesTable, csv=True, tag="stats"),
    Route("GET", "/api/stats/days", days, "Calls per day (PBX time zone)", query=StatsQuery, response=SeriesTable,
          csv=True, tag="stats"),
    Route("GET", "/api/stats/not-contacted", not_contacted,
          "Clients with no answered call either way for `days` days, by owner", query=NotContactedQuery,
          response=NotContactedPage, csv=True, tag="stats"),
    Route("GET", "/api/stats/not-called-back", not_called_back,
          "Missed and abandoned inbound calls with no later answered call with the same client",
          query=MissedQuery, response=MissedPage, csv=True, tag="stats"),
]
