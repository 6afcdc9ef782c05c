"""Read queries for the REST API (and later the supervisor screens): client search,
manager list, call list with filters and keyset pagination, one call with its routing
decisions. Every list is bounded by a `limit`; pages go by `after` (the last row's key)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.records import CallRecord

from .clients import Client, _load
from .schema import Call, CallLeg, ClientPhone, ClientRow, Manager, ManagerDevice, RouteDecisionRow

_calls = Call.__table__
_legs = CallLeg.__table__
_clients = ClientRow.__table__
_phones = ClientPhone.__table__
_managers = Manager.__table__
_devices = ManagerDevice.__table__
_decisions = RouteDecisionRow.__table__


# ------------------------------------------------------------------ clients
def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_clients(conn: AsyncConnection, *, name: str | None = None, phone: str | None = None,
                         owner: str | None = None, after: str | None = None, limit: int = 100) -> list[Client]:
    """Clients by id order. `name`: a case-insensitive substring (SQLite folds ASCII
    only); `phone`: E.164, exact; `owner`: the owner's extension."""
    stmt = select(_clients.c.id)
    if name:
        stmt = stmt.where(_clients.c.name.ilike(_like(name), escape="\\"))
    if phone:
        stmt = stmt.where(exists().where(_phones.c.client_id == _clients.c.id, _phones.c.phone == phone))
    if owner is not None:
        stmt = stmt.where(_clients.c.owner_extension == owner)
    if after is not None:
        stmt = stmt.where(_clients.c.id > after)
    ids = list((await conn.scalars(stmt.order_by(_clients.c.id).limit(limit))).all())
    found = await _load(conn, ids)
    return [found[i] for i in ids if i in found]


async def delete_client(conn: AsyncConnection, client_id: str) -> bool:
    """Removes the client and (ON DELETE CASCADE; deleted explicitly too for a SQLite
    connection without foreign keys) its phones."""
    await conn.execute(delete(_phones).where(_phones.c.client_id == client_id))
    res = await conn.execute(delete(_clients).where(_clients.c.id == client_id))
    return bool(res.rowcount)


# ------------------------------------------------------------------ managers
@dataclass(frozen=True, slots=True)
class ManagerRow:
    extension: str
    name: str | None
    dnd: bool
    devices: tuple[str, ...]


async def list_managers(conn: AsyncConnection, extensions: Sequence[str] | None = None) -> list[ManagerRow]:
    stmt = select(_managers.c.extension, _managers.c.name, _managers.c.dnd).order_by(_managers.c.extension)
    dev_stmt = select(_devices.c.extension, _devices.c.device).order_by(_devices.c.device)
    if extensions is not None:
        stmt = stmt.where(_managers.c.extension.in_(list(extensions)))
        dev_stmt = dev_stmt.where(_devices.c.extension.in_(list(extensions)))
    devices: dict[str, list[str]] = {}
    for ext, dev in await conn.execute(dev_stmt):
        devices.setdefault(ext, []).append(dev)
    return [ManagerRow(r.extension, r.name, bool(r.dnd), tuple(devices.get(r.extension, ())))
            for r in await conn.execute(stmt)]


async def manager_extensions(conn: AsyncConnection, extensions: Sequence[str]) -> set[str]:
    """Those of `extensions` that are managers."""
    wanted = list(set(extensions))
    if not wanted:
        return set()
    return set((await conn.scalars(select(_managers.c.extension).where(_managers.c.extension.in_(wanted)))).all())


# ------------------------------------------------------------------ calls
@dataclass(frozen=True, slots=True)
class CallFilter:
    since: datetime | None = None       # started_at >= since
    until: datetime | None = None       # started_at < until
    manager: str | None = None          # answered, held at the end, or rang (a leg)
    client: str | None = None
    outcome: str | None = None
    direction: str | None = None
    queue: str | None = None
    complete: bool | None = None
    pbx: str | None = None
    visible_to: str | None = None       # a manager's extension: only their own calls


def _involves(extension: str) -> Any:
    return or_(_calls.c.answered_by == extension, _calls.c.final_agent == extension,
               exists().where(_legs.c.call_id == _calls.c.id, _legs.c.agent == extension))


def _filtered(stmt: Select, f: CallFilter) -> Select:
    c = _calls.c
    for col, value in ((c.client_id, f.client), (c.outcome, f.outcome), (c.direction, f.direction),
                       (c.queue, f.queue), (c.complete, f.complete), (c.pbx, f.pbx)):
        if value is not None:
            stmt = stmt.where(col == value)
    if f.since is not None:
        stmt = stmt.where(c.started_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(c.started_at < f.until)
    for ext in (f.manager, f.visible_to):
        if ext is not None:
            stmt = stmt.where(_involves(ext))
    return stmt


async def list_calls(conn: AsyncConnection, f: CallFilter, *, before: int | None = None,
                     limit: int = 100) -> list[tuple[int, CallRecord]]:
    """(row id, record), newest stored first; the next page starts `before` the last id."""
    stmt = _filtered(select(_calls.c.id, _calls.c.record), f)
    if before is not None:
        stmt = stmt.where(_calls.c.id < before)
    rows = await conn.execute(stmt.order_by(_calls.c.id.desc()).limit(limit))
    return [(r.id, CallRecord.model_validate(r.record)) for r in rows]


@dataclass(frozen=True, slots=True)
class StoredDecision:
    decided_at: datetime
    caller_raw: str | None
    caller_number: str | None
    client_id: str | None
    rule: str | None
    reason: str | None
    dial: str | None
    timeout: int | None
    fallback: str | None
    latency_ms: float | None
    trace: dict[str, Any] | None


async def call_with_decisions(conn: AsyncConnection, pbx: str, call_id: str, *,
                              visible_to: str | None = None) -> tuple[CallRecord, list[StoredDecision]] | None:
    """The call and every routing answer given for it (joined by pbx + linkedid: the
    call's id is the linkedid of its first channel, which the dialplan hands the router)."""
    stmt = _filtered(select(_calls.c.record), CallFilter(visible_to=visible_to))
    doc = await conn.scalar(stmt.where(_calls.c.pbx == pbx, _calls.c.call_id == call_id))
    if doc is None:
        return None
    d = _decisions.c
    rows = await conn.execute(
        select(d.decided_at, d.caller_raw, d.caller_number, d.client_id, d.rule, d.reason, d.dial, d.timeout,
               d.fallback, d.latency_ms, d.trace)
        .where(d.pbx == pbx, d.linkedid == call_id).order_by(d.decided_at, d.id))
    return CallRecord.model_validate(doc), [StoredDecision(*r) for r in rows]
