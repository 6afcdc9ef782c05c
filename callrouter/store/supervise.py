"""Deals (pushed by the CRM), monthly targets (set by supervisors) and the audit of
recording listens and downloads. Functions take an engine: each is one transaction."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ._upsert import insert_for
from .schema import DealCount, RecordingAccess, Target

_deals = DealCount.__table__
_targets = Target.__table__
_access = RecordingAccess.__table__


@dataclass(frozen=True, slots=True)
class DealDay:
    extension: str
    day: date
    deals: int


@dataclass(frozen=True, slots=True)
class TargetRow:
    extension: str
    month: date          # the month's first day
    calls: int | None
    talk_minutes: int | None
    deals: int | None
    set_by: str | None = None


@dataclass(frozen=True, slots=True)
class Access:
    at: datetime
    user_name: str
    role: str
    pbx: str
    call_id: str
    action: str          # listen | download
    remote: str | None
    range: str | None


async def upsert_deals(engine: AsyncEngine, items: Sequence[DealDay]) -> int:
    """Idempotent: the last push for a manager and day replaces the count."""
    latest = {(d.extension, d.day): d for d in items}
    if not latest:
        return 0
    async with engine.begin() as conn:
        ins = insert_for(conn.dialect, _deals)
        stmt = ins.on_conflict_do_update(index_elements=["extension", "day"],
                                         set_={"deals": ins.excluded.deals, "updated_at": func.now()})
        await conn.execute(stmt, [{"extension": d.extension, "day": d.day, "deals": d.deals}
                                  for _, d in sorted(latest.items())])
    return len(latest)


async def list_deals(engine: AsyncEngine, first: date, last: date, extension: str | None = None) -> list[DealDay]:
    stmt = select(_deals.c.extension, _deals.c.day, _deals.c.deals).where(_deals.c.day >= first, _deals.c.day <= last)
    if extension is not None:
        stmt = stmt.where(_deals.c.extension == extension)
    async with engine.connect() as conn:
        return [DealDay(*r) for r in await conn.execute(stmt.order_by(_deals.c.day, _deals.c.extension))]


async def set_targets(engine: AsyncEngine, items: Sequence[TargetRow]) -> int:
    latest = {(t.extension, t.month): t for t in items}
    if not latest:
        return 0
    async with engine.begin() as conn:
        ins = insert_for(conn.dialect, _targets)
        cols = ("calls", "talk_minutes", "deals", "set_by")
        stmt = ins.on_conflict_do_update(index_elements=["extension", "month"],
                                         set_={**{k: ins.excluded[k] for k in cols}, "updated_at": func.now()})
        await conn.execute(stmt, [{"extension": t.extension, "month": t.month, "calls": t.calls,
                                   "talk_minutes": t.talk_minutes, "deals": t.deals, "set_by": t.set_by}
                                  for _, t in sorted(latest.items())])
    return len(latest)


async def targets_of(engine: AsyncEngine, month: date, extension: str | None = None) -> list[TargetRow]:
    t = _targets.c
    stmt = select(t.extension, t.month, t.calls, t.talk_minutes, t.deals, t.set_by).where(t.month == month)
    if extension is not None:
        stmt = stmt.where(t.extension == extension)
    async with engine.connect() as conn:
        return [TargetRow(*r) for r in await conn.execute(stmt.order_by(t.extension))]


async def record_access(engine: AsyncEngine, a: Access) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(_access).values(at=a.at, user_name=a.user_name, role=a.role, pbx=a.pbx,
                                                  call_id=a.call_id, action=a.action, remote=a.remote,
                                                  range=a.range))


async def list_access(engine: AsyncEngine, *, since: datetime | None = None, pbx: str | None = None,
                      call_id: str | None = None, user: str | None = None, limit: int = 1000) -> list[Access]:
    x = _access.c
    stmt = select(x.at, x.user_name, x.role, x.pbx, x.call_id, x.action, x.remote, x.range)
    for col, v in ((x.pbx, pbx), (x.call_id, call_id), (x.user_name, user)):
        if v is not None:
            stmt = stmt.where(col == v)
    if since is not None:
        stmt = stmt.where(x.at >= since)
    async with engine.connect() as conn:
        return [Access(*r) for r in await conn.execute(stmt.order_by(x.id.desc()).limit(limit))]
