"""Finished calls: idempotent upsert keyed by (pbx, call_id), legs replaced with their call,
and `last_answered` (the latest answered call per client and per outside number, for the
statistics) kept in the same transaction."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datetime import datetime

from sqlalchemy import Insert, delete, func, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from callrouter.records import CallRecord

from ._upsert import chunks, insert_for
from .schema import Call, CallLeg, LastAnswered

_calls = Call.__table__
_legs = CallLeg.__table__
_last = LastAnswered.__table__
# last_answered's kinds and the calls column each is keyed by
_LAST_KEYS = (("client", _calls.c.client_id), ("number", _calls.c.peer_number))

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
        before = await _answered_before(conn, batch)
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
        await _keep_last_answered(conn, batch, before)


def _last_keys(r: CallRecord) -> list[tuple[str, str]]:
    """The last_answered keys an answered record counts for."""
    if r.outcome != "answered" or r.started_at is None:
        return []
    return [(kind, key) for kind, key in (("client", r.client_id), ("number", peer_number(r))) if key is not None]


async def _answered_before(conn: AsyncConnection, batch: Sequence[CallRecord]
                           ) -> dict[tuple[str, str], list[tuple[str, str, datetime]]]:
    """The batch's calls already stored as answered: (pbx, call_id) → their last_answered
    keys and start. A first write (the usual case) finds none."""
    by_pbx: dict[str, list[str]] = {}
    for r in batch:
        by_pbx.setdefault(r.pbx, []).append(r.call_id)
    out: dict[tuple[str, str], list[tuple[str, str, datetime]]] = {}
    c = _calls.c
    for pbx, ids in by_pbx.items():
        rows = await conn.execute(
            select(c.call_id, c.client_id, c.peer_number, c.started_at)
            .where(c.pbx == pbx, c.call_id.in_(ids), c.outcome == "answered", c.started_at.is_not(None)))
        for call_id, client_id, number, started in rows:
            out[(pbx, call_id)] = [(kind, key, started) for kind, key in (("client", client_id), ("number", number))
                                   if key is not None]
    return out


async def _keep_last_answered(conn: AsyncConnection, batch: Sequence[CallRecord],
                              before: dict[tuple[str, str], list[tuple[str, str, datetime]]]) -> None:
    """Raise each key's latest answered start to the batch's (GREATEST: a replayed record,
    or another writer's concurrent one, never lowers it); where a stored answered call
    was rewritten so that it may no longer be its key's latest (not answered any more,
    another client or number, an earlier start), recompute the key from the calls."""
    latest: dict[tuple[str, str], datetime] = {}
    for r in batch:
        for k in _last_keys(r):
            assert r.started_at is not None
            if k not in latest or r.started_at > latest[k]:
                latest[k] = r.started_at
    if latest:
        ins = insert_for(conn.dialect, _last)
        greatest = func.greatest if conn.dialect.name == "postgresql" else func.max  # SQLite: 2-argument max()
        await conn.execute(
            ins.on_conflict_do_update(index_elements=["kind", "key"],
                                      set_={"started_at": greatest(_last.c.started_at, ins.excluded.started_at)}),
            [{"kind": kind, "key": key, "started_at": t} for (kind, key), t in sorted(latest.items())])
    stale: set[tuple[str, str]] = set()
    by_call = {(r.pbx, r.call_id): r for r in batch}
    for call, keys in before.items():
        r = by_call[call]
        now = set(_last_keys(r))
        for kind, key, started in keys:
            if (kind, key) not in now or r.started_at is None or r.started_at < started:
                stale.add((kind, key))
    col = dict(_LAST_KEYS)
    for kind, key in sorted(stale):
        where = (_last.c.kind == kind, _last.c.key == key)
        if conn.dialect.name == "postgresql":
            # lock the key first: the max below is then read after any other writer's
            # GREATEST on it has committed (READ COMMITTED: a new snapshot per statement),
            # and a writer coming later waits and raises our value with its own
            await conn.execute(select(_last.c.key).where(*where).with_for_update())
        t = await conn.scalar(select(func.max(_calls.c.started_at))
                              .where(col[kind] == key, _calls.c.outcome == "answered"))
        if t is None:
            await conn.execute(delete(_last).where(*where))
        else:
            await conn.execute(update(_last).where(*where).values(started_at=t))


# The migration's fill (0008), for data written around the call writer (bulk loads)
REBUILD_LAST_ANSWERED = [
    f"INSERT INTO last_answered (kind, key, started_at) SELECT '{kind}', {col.name}, max(started_at) FROM calls "
    f"WHERE outcome = 'answered' AND {col.name} IS NOT NULL AND started_at IS NOT NULL GROUP BY {col.name}"
    for kind, col in _LAST_KEYS]


async def get_call(conn: AsyncConnection, pbx: str, call_id: str) -> CallRecord | None:
    doc = await conn.scalar(select(_calls.c.record).where(_calls.c.pbx == pbx, _calls.c.call_id == call_id))
    return None if doc is None else CallRecord.model_validate(doc)


async def count_calls(conn: AsyncConnection, pbx: str | None = None) -> int:
    stmt = select(func.count()).select_from(_calls)
    if pbx is not None:
        stmt = stmt.where(_calls.c.pbx == pbx)
    return int(await conn.scalar(stmt) or 0)
