"""Finished calls: idempotent upsert keyed by (pbx, call_id), legs replaced with their call."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, delete, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.records import CallRecord

from ._upsert import chunks, insert_for
from .schema import Call, CallLeg

_calls = Call.__table__
_legs = CallLeg.__table__

# Records per statement group. Bounds statement size (SQLite and asyncpg both cap
# bound parameters near 32k; SQLAlchemy further splits the VALUES list) and the
# size of each `IN (...)` list for the leg delete.
_CHUNK = 500

# Everything but the key and the surrogate id is replaced by a later write of the same
# call: a record written incomplete during an AMI outage and completed later wins.
_UPDATED = [c.name for c in _calls.columns if c.name not in ("id", "pbx", "call_id", "updated_at")]

_stmt_cache: dict[str, Insert] = {}


def _upsert_stmt(dialect: Dialect) -> Insert:
    stmt = _stmt_cache.get(dialect.name)
    if stmt is None:
        ins = insert_for(dialect, _calls)
        set_ = {name: ins.excluded[name] for name in _UPDATED}
        set_["updated_at"] = func.now()
        stmt = ins.on_conflict_do_update(index_elements=["pbx", "call_id"], set_=set_).returning(
            _calls.c.id, _calls.c.pbx, _calls.c.call_id)
        _stmt_cache[dialect.name] = stmt
    return stmt


def _call_row(r: CallRecord) -> dict[str, Any]:
    route = r.route
    return {
        "pbx": r.pbx, "call_id": r.call_id, "direction": r.direction,
        "caller_number": r.caller.number, "caller_raw": r.caller.raw, "caller_name": r.caller.name,
        "callee_number": r.callee.number, "callee_raw": r.callee.raw, "callee_name": r.callee.name,
        "client_id": r.client_id,
        "started_at": r.started_at, "answered_at": r.answered_at, "ended_at": r.ended_at,
        "ring_seconds": r.ring_seconds, "talk_seconds": r.talk_seconds,
        "duration_seconds": r.duration_seconds,
        "outcome": r.outcome, "hangup_by": r.hangup_by, "answered_by": r.answered_by,
        "final_agent": r.final_agent, "queue": r.queue, "recording": r.recording,
        "peer_number": peer_number(r),
        "complete": r.complete,
        "route_rule": route.rule if route else None,
        "route_reason": route.reason if route else None,
        "route_dial": route.dial if route else None,
        "route_latency_ms": route.latency_ms if route else None,
        "record": r.to_dict(),
    }


def peer_number(r: CallRecord) -> str | None:
    """The outside party's E.164 number: whom the call was with, in either direction."""
    if r.direction == "in":
        return r.caller.number
    if r.direction == "out":
        return r.callee.number
    return None


async def save_calls(conn: AsyncConnection, records: Sequence[CallRecord]) -> None:
    """Upsert `records` inside the caller's transaction."""
    # Last write wins inside a batch too; PostgreSQL also refuses to update the same
    # row twice in one INSERT ... ON CONFLICT statement.
    latest = {(r.pbx, r.call_id): r for r in records}
    # Key order: two daemons writing overlapping batches lock rows in the same order,
    # so PostgreSQL cannot deadlock them against each other.
    ordered = [latest[k] for k in sorted(latest)]
    stmt = _upsert_stmt(conn.dialect)
    for batch in chunks(ordered, _CHUNK):
        result = await conn.execute(stmt, [_call_row(r) for r in batch])
        ids = {(pbx, call_id): id_ for id_, pbx, call_id in result}
        # Replace legs wholesale: a completed record may have more, fewer or different legs.
        await conn.execute(delete(_legs).where(_legs.c.call_id.in_(ids.values())))
        legs = [
            {"call_id": ids[(r.pbx, r.call_id)], "seq": seq, "agent": leg.agent,
             "device": leg.device, "ring_seconds": leg.ring_seconds, "result": leg.result,
             "queue": leg.queue}
            for r in batch for seq, leg in enumerate(r.legs)
        ]
        if legs:
            await conn.execute(insert(_legs), legs)


async def get_call(conn: AsyncConnection, pbx: str, call_id: str) -> CallRecord | None:
    doc = await conn.scalar(select(_calls.c.record).where(_calls.c.pbx == pbx, _calls.c.call_id == call_id))
    return None if doc is None else CallRecord.model_validate(doc)


async def count_calls(conn: AsyncConnection, pbx: str | None = None) -> int:
    stmt = select(func.count()).select_from(_calls)
    if pbx is not None:
        stmt = stmt.where(_calls.c.pbx == pbx)
    return int(await conn.scalar(stmt) or 0)
