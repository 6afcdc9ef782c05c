"""What the router decided (audit trail per call) and the leads it created."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ._upsert import BulkUpsert, insert_for
from .schema import Lead, RouteDecision

_decisions = RouteDecision.__table__
_DECISION_COLUMNS = ("pbx", "linkedid", "decided_at", "caller_raw", "caller_number", "client_id", "rule",
                     "reason", "dial", "timeout", "fallback", "latency_ms", "trace")
_leads = Lead.__table__


@dataclass(frozen=True, slots=True)
class RouteDecisionRow:
    """One FastAGI routing answer, with the trace of the rules that produced it.

    A frozen dataclass, not a pydantic model: one is built for every routed call on the
    daemon's event loop, and only from values the router already typed."""

    pbx: str
    linkedid: str
    decided_at: datetime  # timezone-aware
    caller_raw: str | None = None
    caller_number: str | None = None  # E.164
    client_id: str | None = None
    rule: str | None = None
    reason: str | None = None
    dial: str | None = None
    timeout: int | None = None
    fallback: str | None = None
    latency_ms: float | None = None
    # free-form by design (stored as JSON): the rules engine owns its trace format
    trace: Any = None

    def __post_init__(self) -> None:
        if self.decided_at.tzinfo is None:
            raise ValueError("decided_at must be timezone-aware")

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _DECISION_COLUMNS}

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> RouteDecisionRow:
        return cls(**{f: m[f] for f in _DECISION_COLUMNS})


async def save_route_decision(conn: AsyncConnection, row: RouteDecisionRow) -> None:
    await conn.execute(insert(_decisions).values(**row.as_dict()))

_bulk_decisions = BulkUpsert(_decisions, _DECISION_COLUMNS)


def _sqlite_utc(dt: datetime) -> str:
    # what UtcDateTime stores on SQLite (naive UTC, SQLAlchemy's DATETIME text format)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


async def save_route_decisions(conn: AsyncConnection, rows: Sequence[RouteDecisionRow]) -> None:
    """Many decisions in one statement: the FastAGI decision log writes every call's
    decision, on the daemon's event loop, so per-row cost matters. On SQLite the rows go
    to the driver's own executemany as plain tuples (SQLAlchemy's per-row parameter
    processing cost more than SQLite's work); PostgreSQL keeps the typed path."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        await conn.execute(insert(_decisions), [row.as_dict() for row in rows])
        return
    dumps = json.dumps
    await _bulk_decisions.run(conn, [
        (r.pbx, r.linkedid, _sqlite_utc(r.decided_at), r.caller_raw, r.caller_number, r.client_id, r.rule,
         r.reason, r.dial, r.timeout, r.fallback, r.latency_ms, None if r.trace is None else dumps(r.trace))
        for r in rows])


_bulk_leads = BulkUpsert(_leads, ("pbx", "phone", "raw", "call_id"), conflict=("pbx", "phone"))


async def save_leads(conn: AsyncConnection, leads: Sequence[tuple[str, str, str | None, str | None]]) -> None:
    """(pbx, phone, raw, call_id) leads in one statement; the first lead per (pbx, phone)
    wins, as in save_lead."""
    await _bulk_leads.run(conn, [tuple(lead) for lead in leads])


async def save_lead(conn: AsyncConnection, pbx: str, phone: str, raw: str | None,
                    call_id: str | None) -> bool:
    """Record a lead for an unknown caller; True if it is new. A caller who rings again
    keeps the first lead (and its first call_id)."""
    ins = insert_for(conn.dialect, _leads)
    result = await conn.execute(
        ins.values(pbx=pbx, phone=phone, raw=raw, call_id=call_id)
        .on_conflict_do_nothing(index_elements=["pbx", "phone"]).returning(_leads.c.id))
    return result.first() is not None

