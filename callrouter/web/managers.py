"""/api/managers: list, upsert (extension, name, devices), DND on/off.

DND goes through `Daemon.set_dnd`: stored, and presence and routing see it at once.
A manager may switch only their own DND; another extension is 404 to them."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from callrouter.config import ManagerConfig
from callrouter.crm.models import ManagerIn

from .app import ALL_ROLES, ApiError, Ctx, Route, not_found, read_body, read_json, read_query
from .csvout import MANAGER_COLUMNS, csv_response, wants_csv
from .models import DndIn, ListQuery, ManagerOut, ManagerPut


def _out(m: Any) -> ManagerOut:
    return ManagerOut(extension=m.extension, name=m.name, dnd=m.dnd, devices=list(m.devices))


async def _one(ctx: Ctx, ext: str) -> ManagerOut:
    found = await ctx.store.list_managers([ext])
    if not found:
        raise not_found(f"manager {ext!r}")
    return _out(found[0])


async def list_all(request: web.Request, ctx: Ctx) -> Any:
    q: ListQuery = read_query(request, ListQuery)
    items = [_out(m) for m in await ctx.store.list_managers()]
    if wants_csv(request, q.format):
        async def rows():
            for m in items:
                yield m.model_dump()
        return await csv_response(request, "managers.csv", MANAGER_COLUMNS, rows())
    return items


async def put_one(request: web.Request, ctx: Ctx) -> ManagerOut:
    ext = request.match_info["extension"]
    data = await read_json(request)
    if isinstance(data, dict):
        if "extension" in data and data["extension"] != ext:
            raise ApiError(400, f"extension: the body's {data['extension']!r} is not the path's {ext!r}",
                           field="extension")
        data = {**data, "extension": ext}
    m: ManagerIn = await read_body(request, ManagerIn, data=data)
    await ctx.store.upsert_managers([ManagerConfig(extension=m.extension, name=m.name, devices=m.devices)])
    return await _one(ctx, m.extension)


async def put_dnd(request: web.Request, ctx: Ctx) -> ManagerOut:
    ext = request.match_info["extension"]
    own = ctx.own_extension
    if own is not None and own != ext:
        raise not_found(f"manager {ext!r}")
    body: DndIn = await read_body(request, DndIn)
    await _one(ctx, ext)  # 404 for an extension that is not a manager
    await ctx.daemon.set_dnd(ext, body.dnd)
    return await _one(ctx, ext)


_EXT = {"extension": {"pattern": "^[0-9A-Za-z*#+_-]{1,32}$"}}

ROUTES = [
    Route("GET", "/api/managers", list_all, "Every manager with devices and DND", query=ListQuery,
          response=list[ManagerOut],
          csv=True, tag="managers"),
    Route("PUT", "/api/managers/{extension}", put_one, "Create or update a manager (name, devices)",
          roles=("admin",), body=ManagerPut, response=ManagerOut, tag="managers", extra=_EXT),
    Route("PUT", "/api/managers/{extension}/dnd", put_dnd, "Do-not-disturb on or off (routing sees it at once)",
          roles=ALL_ROLES, body=DndIn, response=ManagerOut, errors=(404,), tag="managers", extra=_EXT),
]
