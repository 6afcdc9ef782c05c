"""/api/callbacks: callback tasks (opened by missed/abandoned calls from known clients,
closed by the next answered call with them, or by hand).

A manager sees the callbacks assigned to their extension; another's is 404 to them.
Staff see all (and may filter by assignee, e.g. the desk queue)."""
from __future__ import annotations

import base64

from aiohttp import web

from callrouter.store.callbacks import Callback

from .app import ApiError, Ctx, Route, not_found, read_query
from .popmodels import CallbackOut, CallbackPage, CallbackQuery


def out(c: Callback) -> CallbackOut:
    return CallbackOut(id=c.id, pbx=c.pbx, call_id=c.call_id, client_id=c.client_id, assignee=c.assignee,
                       assignee_kind=c.assignee_kind, reason=c.reason,  # type: ignore[arg-type]
                       caller_number=c.caller_number, call_started_at=c.call_started_at, created_at=c.created_at,
                       status="done" if c.closed_at else "open", closed_at=c.closed_at,
                       closed_by_call=c.closed_by_call, closed_by=c.closed_by)


def _cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"b{row_id}".encode()).decode()


def _before(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith("b"):
            raise ValueError(text)
        return int(text[1:])
    except ValueError:
        raise ApiError(400, "cursor: not a cursor this API gave", field="cursor") from None


async def list_callbacks(request: web.Request, ctx: Ctx) -> CallbackPage:
    q: CallbackQuery = read_query(request, CallbackQuery)
    own = ctx.own_extension
    if own is not None and q.assignee is not None and q.assignee != own:
        raise ApiError(403, "a manager sees only their own callbacks", field="assignee")
    rows = await ctx.store.list_callbacks(status=q.status, assignee=own or q.assignee, client_id=q.client,
                                          before=_before(q.cursor), limit=q.limit)
    return CallbackPage(items=[out(c) for c in rows],
                        next_cursor=_cursor(rows[-1].id) if len(rows) == q.limit else None)


async def done(request: web.Request, ctx: Ctx) -> CallbackOut:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "id: not a callback id", field="id")
    assert ctx.principal is not None
    found = await ctx.store.callback_done(int(raw), ctx.principal.user.name, visible_to=ctx.own_extension)
    if found is None:
        raise not_found(f"callback {raw}")
    return out(found)


ROUTES = [
    Route("GET", "/api/callbacks", list_callbacks, "Callback tasks, newest first (a manager: their own)",
          query=CallbackQuery, response=CallbackPage, errors=(403,), tag="callbacks"),
    Route("POST", "/api/callbacks/{id}/done", done, "Mark a callback done (idempotent)", response=CallbackOut,
          tag="callbacks", extra={"id": {"pattern": "^[0-9]{1,18}$"}}),
]
