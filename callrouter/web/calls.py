"""/api/calls: the call log with filters and keyset pagination, one call with its legs,
transfers and routing decisions (with their trace), CSV of any list.

A manager sees only calls they answered, held at the end, or that rang them; another
manager's call is 404 to them, as if it did not exist."""
from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from callrouter.store.queries import CallFilter

from .app import ApiError, Ctx, Route, not_found, read_query
from .csvout import CALL_COLUMNS, call_row, csv_response, wants_csv
from .models import CallDetail, CallPage, CallQuery, DecisionOut


def _cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"c{row_id}".encode()).decode()


def _before(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith("c"):
            raise ValueError(text)
        return int(text[1:])
    except ValueError:
        raise ApiError(400, "cursor: not a cursor this API gave", field="cursor") from None


async def list_calls(request: web.Request, ctx: Ctx) -> Any:
    q: CallQuery = read_query(request, CallQuery)
    f = CallFilter(since=q.since, until=q.until, manager=q.manager, client=q.client, outcome=q.outcome,
                   direction=q.direction, queue=q.queue, complete=q.complete, pbx=q.pbx,
                   visible_to=ctx.own_extension)
    before = _before(q.cursor)
    if wants_csv(request, q.format):
        async def rows():
            b = before
            while page := await ctx.store.list_calls(f, before=b, limit=500):
                for _, record in page:
                    yield call_row(record.to_dict())
                b = page[-1][0]
        return await csv_response(request, "calls.csv", CALL_COLUMNS, rows())
    page = await ctx.store.list_calls(f, before=before, limit=q.limit)
    return CallPage(items=[r for _, r in page],
                    next_cursor=_cursor(page[-1][0]) if len(page) == q.limit else None)


async def get_one(request: web.Request, ctx: Ctx) -> CallDetail:
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    found = await ctx.store.call_with_decisions(pbx, call_id, visible_to=ctx.own_extension)
    if found is None:
        raise not_found(f"call {pbx}/{call_id}")
    record, decisions = found
    return CallDetail(call=record, decisions=[DecisionOut(**vars_of(d)) for d in decisions])


def vars_of(d: Any) -> dict[str, Any]:
    return {k: getattr(d, k) for k in d.__slots__}


ROUTES = [
    Route("GET", "/api/calls", list_calls, "Calls, newest first, filtered; `next_cursor` pages on",
          query=CallQuery, response=CallPage, csv=True, tag="calls"),
    Route("GET", "/api/calls/{pbx}/{call_id}", get_one,
          "One call: legs, transfers, and the routing decision with its trace", response=CallDetail,
          tag="calls"),
]
