"""Callback tasks (`callbacks`, migration 0005) and the history a screen-pop card shows.

Opening is idempotent by the opening call (INSERT ... ON CONFLICT (pbx, call_id) DO
NOTHING): a replayed record never opens a second one. Closing by a call only touches
callbacks still open whose opening call started before the closing one, so a late replay
of an old answered call cannot close a newer callback.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Select, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.screenpop.callbacks import CloseBy, NewCallback

from ._upsert import insert_for
from .schema import Call, CallbackRow

_cb = CallbackRow.__table__
_calls = Call.__table__

Status = Literal["open", "done", "all"]


@dataclass(frozen=True, slots=True)
class Callback:
    id: int
    pbx: str
    call_id: str
    client_id: str
    assignee: str
    assignee_kind: str
    reason: str
    caller_number: str | None
    call_started_at: datetime | None
    created_at: datetime
    closed_at: datetime | None
    closed_by_call: str | None
    closed_by: str | None


@dataclass(frozen=True, slots=True)
class RecentCallRow:
    call_id: str
    started_at: datetime | None
    direction: str
    outcome: str
    answered_by: str | None
    final_agent: str | None


_COLUMNS = [_cb.c[f] for f in Callback.__slots__]


async def open_callback(conn: AsyncConnection, new: NewCallback) -> bool:
    """True when a row was made (False: this call already opened one)."""
    ins = insert_for(conn.dialect, _cb)
    stmt = ins.values(pbx=new.pbx, call_id=new.call_id, client_id=new.client_id, assignee=new.assignee,
                      assignee_kind=new.assignee_kind, reason=new.reason, caller_number=new.caller_number,
                      call_started_at=new.call_started_at, created_at=datetime.now(UTC)
                      ).on_conflict_do_nothing(index_elements=["pbx", "call_id"])
    res = await conn.execute(stmt)
    return bool(res.rowcount)


async def clients_with_open(conn: AsyncConnection, client_ids: set[str]) -> set[str]:
    """Which of these clients have an open callback."""
    rows = await conn.execute(select(_cb.c.client_id).distinct()
                              .where(_cb.c.client_id.in_(sorted(client_ids)), _cb.c.closed_at.is_(None)))
    return {r[0] for r in rows}


async def close_by_call(conn: AsyncConnection, client_id: str, call_id: str, started_at: datetime | None) -> int:
    """Close the client's open callbacks opened before this answered call; how many."""
    stmt = update(_cb).where(_cb.c.client_id == client_id, _cb.c.closed_at.is_(None), _cb.c.call_id != call_id)
    if started_at is not None:
        stmt = stmt.where(or_(_cb.c.call_started_at.is_(None), _cb.c.call_started_at <= started_at))
    res = await conn.execute(stmt.values(closed_at=datetime.now(UTC), closed_by_call=call_id))
    return int(res.rowcount or 0)


async def mark_done(conn: AsyncConnection, callback_id: int, user: str,
                    visible_to: str | None = None) -> Callback | None:
    """Close by hand (idempotent: an already closed one is returned as it is); None when
    there is no such callback for this user."""
    where = [_cb.c.id == callback_id]
    if visible_to is not None:
        where.append(_cb.c.assignee == visible_to)
    await conn.execute(update(_cb).where(*where, _cb.c.closed_at.is_(None))
                       .values(closed_at=datetime.now(UTC), closed_by=user))
    row = (await conn.execute(select(*_COLUMNS).where(*where))).first()
    return Callback(*row) if row is not None else None


# The two queries of a screen-pop card run for every routed call (the prefetch): built
# once per shape with bound parameters, so a call costs SQLAlchemy a cache lookup instead
# of building, coercing and hashing a new statement (~0.3 ms of the daemon's CPU a card)
_SHAPES = 256


@functools.lru_cache(maxsize=_SHAPES)
def _list_stmt(status: Status, by_assignee: bool, by_client: bool, paged: bool, limit: int) -> Select:
    stmt = select(*_COLUMNS)
    if status == "open":
        stmt = stmt.where(_cb.c.closed_at.is_(None))
    elif status == "done":
        stmt = stmt.where(_cb.c.closed_at.is_not(None))
    if by_assignee:
        stmt = stmt.where(_cb.c.assignee == bindparam("assignee"))
    if by_client:
        stmt = stmt.where(_cb.c.client_id == bindparam("client_id"))
    if paged:
        stmt = stmt.where(_cb.c.id < bindparam("before"))
    return stmt.order_by(_cb.c.id.desc()).limit(limit)


async def list_callbacks(conn: AsyncConnection, *, status: Status = "open", assignee: str | None = None,
                         client_id: str | None = None, before: int | None = None,
                         limit: int = 100) -> list[Callback]:
    """Newest first; the next page starts `before` the last id."""
    params = {k: v for k, v in (("assignee", assignee), ("client_id", client_id), ("before", before))
              if v is not None}
    stmt = _list_stmt(status, assignee is not None, client_id is not None, before is not None, limit)
    rows = await conn.execute(stmt, params) if params else await conn.execute(stmt)
    return [Callback(*r) for r in rows]


@functools.lru_cache(maxsize=_SHAPES)
def _recent_stmt(limit: int) -> Select:
    c = _calls.c
    return (select(c.call_id, c.started_at, c.direction, c.outcome, c.answered_by, c.final_agent)
            .where(c.client_id == bindparam("client_id")).order_by(c.started_at.desc(), c.id.desc()).limit(limit))


async def recent_calls(conn: AsyncConnection, client_id: str, limit: int = 5) -> list[RecentCallRow]:
    rows = await conn.execute(_recent_stmt(limit), {"client_id": client_id})
    return [RecentCallRow(*r) for r in rows]
