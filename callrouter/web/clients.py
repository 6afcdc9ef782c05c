"""/api/clients: search, get, upsert (PUT by id), bulk upsert, delete.

Every write goes through `apply_clients`: owners must be managers, the store is
written, and the running daemon's directory is told at once (`clients_changed`), so
the next call from a changed client is routed by its new data.
"""
from __future__ import annotations

import base64
import codecs
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from callrouter.crm.csvimport import CsvFormatError, RowError, read_clients
from callrouter.crm.models import ClientIn
from callrouter.phone import normalize
from callrouter.store.clients import Client

from .app import STAFF, ApiError, Ctx, FieldError, Route, not_found, read_body, read_json, read_query
from .csvout import CLIENT_COLUMNS, csv_response, wants_csv
from .models import MAX_BULK, BulkClientsIn, BulkOut, ClientPage, ClientPut, ClientQuery


class UnknownOwner(ApiError):
    def __init__(self, field: str, extension: str):
        super().__init__(400, f"{field}: extension {extension!r} is not a manager", field=field)


async def unknown_owners(store: Any, items: Sequence[ClientIn]) -> dict[int, str]:
    """{index: extension} of the items whose owner is not a manager."""
    owners = {c.owner_extension for c in items if c.owner_extension}
    known = await store.manager_extensions(sorted(owners)) if owners else set()
    return {i: c.owner_extension for i, c in enumerate(items)
            if c.owner_extension and c.owner_extension not in known}


async def apply_clients(daemon: Any, items: Sequence[ClientIn], field_prefix: str = "clients") -> int:
    """Validated clients into the store and the running directory; all or none.
    The one way the API (JSON and CSV bodies, PUT) writes clients."""
    bad = await unknown_owners(daemon.store, items)
    if bad:
        i, ext = next(iter(bad.items()))
        raise UnknownOwner(f"{field_prefix}.{i}.owner_extension" if field_prefix else "owner_extension", ext)
    # one transaction for the whole body: all or none, as documented
    written = await daemon.store.upsert_clients([c.to_client() for c in items], chunk_size=max(1, len(items)))
    await daemon.clients_changed(list(dict.fromkeys(c.id for c in items)))
    return written


# ---------------------------------------------------------------- bulk bodies by media type
async def _json_clients(request: web.Request, ctx: Ctx) -> list[ClientIn]:
    body = await read_body(request, BulkClientsIn, context={"region": ctx.region})
    return list(body.clients)

async def _csv_clients(request: web.Request, ctx: Ctx) -> list[ClientIn]:
    """The import's CSV format (`callrouter.crm.csvimport`); one bad row refuses the body,
    every bad row named (row as a spreadsheet numbers it, column, reason)."""
    body = await request.read()
    encoding = request.charset or "utf-8"
    try:
        if not codecs.lookup(encoding)._is_text_encoding:
            raise LookupError(encoding)
    except LookupError:
        raise ApiError(400, f"charset {encoding!r} is not a text encoding Python knows", field="charset") from None
    items: list[ClientIn] = []
    errors: list[FieldError] = []
    try:
        for item in read_clients(body, region=ctx.region, encoding=encoding):
            if len(items) + len(errors) >= MAX_BULK:
                raise ApiError(413, f"more than {MAX_BULK} rows: use `callrouter import clients` for big files")
            if isinstance(item, RowError):
                errors.append(FieldError(field=f"row {item.row}" + (f": {item.field}" if item.field else ""),
                                         message=item.reason))
            else:
                items.append(item)
    except (CsvFormatError, UnicodeError) as e:
        raise ApiError(400, f"CSV: {e}", field="body") from None
    if errors:
        raise ApiError(400, f"{len(errors)} bad row(s); nothing stored", field=errors[0].field, errors=errors[:100])
    return items


# media type -> reader
BULK_READERS: dict[str, Callable[[web.Request, Ctx], Awaitable[list[ClientIn]]]] = {
    "application/json": _json_clients,
    "text/csv": _csv_clients,
}


# ---------------------------------------------------------------- cursors
def _cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return base64.urlsafe_b64decode(cursor.encode()).decode()
    except ValueError:
        raise ApiError(400, "cursor: not a cursor this API gave", field="cursor") from None


# ---------------------------------------------------------------- handlers
def _visible(ctx: Ctx, client: Client | None) -> bool:
    own = ctx.own_extension
    return client is not None and (own is None or client.owner_extension == own)


async def search(request: web.Request, ctx: Ctx) -> Any:
    q: ClientQuery = read_query(request, ClientQuery)
    phone = None
    if q.phone is not None:
        phone = normalize(q.phone, ctx.region)
        if phone is None:
            raise ApiError(400, f"phone: {q.phone!r} is not a dialable number (region {ctx.region})",
                           field="phone")
    owner = q.owner
    own = ctx.own_extension
    if own is not None:
        if owner is not None and owner != own:
            return ClientPage(items=[], next_cursor=None)
        owner = own
    after = _after(q.cursor)

    async def page(after_id: str | None, limit: int) -> list[Client]:
        return await ctx.store.search_clients(name=q.name, phone=phone, owner=owner, after=after_id, limit=limit)

    if wants_csv(request, q.format):
        async def rows():
            a = after
            while batch := await page(a, 500):
                for c in batch:
                    yield c.model_dump(mode="json")
                a = batch[-1].id
        return await csv_response(request, "clients.csv", CLIENT_COLUMNS, rows())
    items = await page(after, q.limit)
    return ClientPage(items=items, next_cursor=_cursor(items[-1].id) if len(items) == q.limit else None)


async def get_one(request: web.Request, ctx: Ctx) -> Client:
    cid = request.match_info["id"]
    found = (await ctx.store.get_clients([cid])).get(cid)
    if not _visible(ctx, found):
        raise not_found(f"client {cid!r}")
    assert found is not None
    return found


async def put_one(request: web.Request, ctx: Ctx) -> Client:
    cid = request.match_info["id"]
    data = await read_json(request)
    if isinstance(data, dict):
        if "id" in data and data["id"] != cid:
            raise ApiError(400, f"id: the body's id {data['id']!r} is not the path's {cid!r}", field="id")
        data = {**data, "id": cid}
    # validated as the ClientIn it becomes (ClientPut only documents the optional id)
    item: ClientIn = await read_body(request, ClientIn, context={"region": ctx.region}, data=data)
    await apply_clients(ctx.daemon, [item], field_prefix="")
    return (await ctx.store.get_clients([item.id]))[item.id]


async def bulk(request: web.Request, ctx: Ctx) -> BulkOut:
    reader = BULK_READERS.get(request.content_type)
    if reader is None:
        raise ApiError(415, f"send the clients as one of {', '.join(BULK_READERS)} "
                            f"(got {request.content_type or 'nothing'})")
    items = await reader(request, ctx)
    return BulkOut(written=await apply_clients(ctx.daemon, items))


async def delete_one(request: web.Request, ctx: Ctx) -> web.Response:
    cid = request.match_info["id"]
    if not await ctx.store.delete_client(cid):
        raise not_found(f"client {cid!r}")
    await ctx.daemon.clients_changed([cid])
    return web.Response(status=204)


_ID = {"id": {"maxLength": 64, "minLength": 1}}

ROUTES = [
    Route("GET", "/api/clients", search, "Search clients by name, phone (any form) or owner",
          query=ClientQuery, response=ClientPage, csv=True, tag="clients"),
    Route("POST", "/api/clients/bulk", bulk, "Upsert many clients at once (all or none)",
          roles=STAFF, body=BulkClientsIn, response=BulkOut, tag="clients"),
    Route("GET", "/api/clients/{id}", get_one, "One client", response=Client, tag="clients", extra=_ID),
    Route("PUT", "/api/clients/{id}", put_one, "Create or replace a client", roles=STAFF, body=ClientPut,
          response=Client, tag="clients", extra=_ID),
    Route("DELETE", "/api/clients/{id}", delete_one, "Delete a client", roles=STAFF, status=204,
          tag="clients", extra=_ID),
]
