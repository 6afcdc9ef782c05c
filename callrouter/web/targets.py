"""Deals and targets: the CRM pushes deal counts per manager and day (PUT /api/deals,
idempotent: the last count for a manager and day wins); a supervisor sets a manager's
targets for a month; GET /api/targets shows each manager's progress toward them."""
from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from callrouter import periods
from callrouter.store import stats as st
from callrouter.store.supervise import DealDay, TargetRow, list_deals, set_targets, targets_of, upsert_deals

from .app import STAFF, ApiError, Ctx, Route, read_body, read_query
from .csvout import csv_response, wants_csv
from .stats import _rows, zone
from .supmodels import DealOut, DealsIn, DealsQuery, TargetIn, TargetOut, TargetsQuery, WrittenOut


def _month(text: str) -> date:
    y, m = text.split("-")
    return date(int(y), int(m), 1)


async def put_deals(request: web.Request, ctx: Ctx) -> WrittenOut:
    body: DealsIn = await read_body(request, DealsIn)
    n = await upsert_deals(ctx.store.engine, [DealDay(d.manager, d.day, d.deals) for d in body.items])
    return WrittenOut(written=n)


async def get_deals(request: web.Request, ctx: Ctx) -> Any:
    q: DealsQuery = read_query(request, DealsQuery)
    own = ctx.own_extension
    if own is not None and q.manager not in (None, own):
        raise ApiError(403, "a manager sees their own deals only", field="manager")
    first = _month(q.month)
    last = date.fromordinal(periods.next_month(first).toordinal() - 1)
    items = [DealOut(manager=d.extension, day=d.day, deals=d.deals)
             for d in await list_deals(ctx.store.engine, first, last, own or q.manager)]
    if wants_csv(request, q.format):
        return await csv_response(request, f"deals-{q.month}.csv", tuple(DealOut.model_fields), _rows(items))
    return items


async def put_target(request: web.Request, ctx: Ctx) -> TargetOut:
    month_text, ext = request.match_info["month"], request.match_info["extension"]
    try:
        if not re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", month_text):
            raise ValueError(month_text)
        month = _month(month_text)
    except ValueError:
        raise ApiError(400, "month: YYYY-MM (2000-2099)", field="month") from None
    if not await ctx.store.manager_extensions([ext]):
        raise ApiError(404, f"manager {ext} not found")
    body: TargetIn = await read_body(request, TargetIn)
    assert ctx.principal is not None
    await set_targets(ctx.store.engine, [TargetRow(ext, month, body.calls, body.talk_minutes, body.deals,
                                                    ctx.principal.user.name)])
    return (await progress(ctx, month, ext))[0]


async def progress(ctx: Ctx, month: date, extension: str | None) -> list[TargetOut]:
    """Each manager's targets for `month` beside what they did in it (PBX calendar)."""
    tz = zone(ctx)
    p = periods.calendar_period("month", month, tz)
    engine = ctx.store.engine
    targets = {t.extension: t for t in await targets_of(engine, month, extension)}
    managers = [extension] if extension is not None else await st.run(engine, st.manager_list)
    scope = st.StatsScope(p, manager=extension, visible_to=extension, managers=managers)
    done = {a.key: a for a in await st.run(engine, st.per_manager, scope, periods.days_of(p, tz))}
    out = []
    for ext in sorted(set(managers) | set(targets)):
        t = targets.get(ext)
        a = done.get(ext) or st.Aggregate(ext)
        calls = a.inbound_answered + a.outbound
        talk = round(a.talk_total / 60, 1)
        deals = a.deals or 0
        out.append(TargetOut(
            manager=ext, month=f"{month.year}-{month.month:02d}",
            calls_target=t.calls if t else None, calls=calls, calls_progress=periods.progress(calls, t and t.calls),
            talk_minutes_target=t.talk_minutes if t else None, talk_minutes=talk,
            talk_minutes_progress=periods.progress(talk, t and t.talk_minutes),
            deals_target=t.deals if t else None, deals=deals, deals_progress=periods.progress(deals, t and t.deals),
            set_by=t.set_by if t else None))
    return out


async def get_targets(request: web.Request, ctx: Ctx) -> Any:
    q: TargetsQuery = read_query(request, TargetsQuery)
    month = _month(q.month) if q.month else periods.month_start(periods.today(datetime.now(UTC), zone(ctx)))
    items = await progress(ctx, month, ctx.own_extension)
    if wants_csv(request, q.format):
        return await csv_response(request, f"targets-{month.isoformat()[:7]}.csv", tuple(TargetOut.model_fields),
                                  _rows(items))
    return items


ROUTES = [
    Route("PUT", "/api/deals", put_deals, "Deal counts per manager and day from the CRM (idempotent upsert)",
          roles=STAFF, body=DealsIn, response=WrittenOut, tag="targets"),
    Route("GET", "/api/deals", get_deals, "Deal counts of a month, per manager and day", query=DealsQuery,
          response=list[DealOut], csv=True, tag="targets"),
    Route("PUT", "/api/targets/{month}/{extension}", put_target,
          "Set a manager's targets for a month (calls, talk minutes, deals)", roles=STAFF, body=TargetIn,
          response=TargetOut, tag="targets", extra={"month": {"pattern": r"^20\d\d-(0[1-9]|1[0-2])$"}}),
    Route("GET", "/api/targets", get_targets, "Each manager's targets for a month and the progress toward them",
          query=TargetsQuery, response=list[TargetOut], csv=True, tag="targets"),
]
