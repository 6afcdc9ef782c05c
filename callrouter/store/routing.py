"""What the router decided (audit trail per call) and the leads it created.

The store takes the router's own `RoutedCall` (callrouter.routing.decision): one
routing answer maps to one `route_decisions` row (`decision_columns`) and, for an
unknown caller with a number, one lead (`RoutedCall.lead()`)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ._upsert import BulkUpsert, insert_for
from .schema import Lead, RouteDecisionRow

if TYPE_CHECKING:
    from callrouter.routing.decision import RoutedCall

_decisions = RouteDecisionRow.__table__
_DECISION_COLUMNS = ("pbx", "linkedid", "uniqueid", "decided_at", "caller_raw", "caller_number", "client_id", "rule",
                     "reason", "dial", "timeout", "fallback", "latency_ms", "trace")
_leads = Lead.__table__


def decision_columns(call: RoutedCall) -> dict[str, Any]:
    """The `route_decisions` row of one routing answer."""
    d = call.decision
    return {"pbx": call.pbx, "linkedid": call.call_id() or "unknown", "uniqueid": call.uniqueid,
            "decided_at": call.decided_at,
            "caller_raw": call.caller_raw, "caller_number": d.caller, "client_id": d.client_id,
            "rule": d.rule or None, "reason": d.reason, "dial": d.dial, "timeout": d.timeout,
            "fallback": d.fallback or None, "latency_ms": round(call.latency_ms, 3), "trace": call.trace()}


# One answer's natural key (migration 0002): a replayed decision is a no-op.
DECISION_KEY = ("pbx", "uniqueid", "decided_at")


def _insert_decisions(conn: AsyncConnection) -> Any:
    return insert_for(conn.dialect, _decisions).on_conflict_do_nothing(index_elements=list(DECISION_KEY))


async def save_route_decision(conn: AsyncConnection, call: RoutedCall) -> None:
    await conn.execute(_insert_decisions(conn).values(**decision_columns(call)))

_bulk_decisions = BulkUpsert(_decisions, _DECISION_COLUMNS, conflict=DECISION_KEY)


def _sqlite_utc(dt: datetime) -> str:
    # what UtcDateTime stores on SQLite (naive UTC, SQLAlchemy's DATETIME text format)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


async def save_route_decisions(conn: AsyncConnection, calls: Sequence[RoutedCall]) -> None:
    """Many decisions in one statement: the FastAGI decision log writes every call's
    decision, so per-row cost matters. On SQLite the rows go to the driver's own
    executemany as plain tuples (SQLAlchemy's per-row parameter processing cost more than
    SQLite's work); PostgreSQL keeps the typed path. Both are ON CONFLICT DO NOTHING on
    the decision's natural key: storing a decision again (a resent or replayed batch)
    changes nothing."""
    if not calls:
        return
    if conn.dialect.name != "sqlite":
        await conn.execute(_insert_decisions(conn), [decision_columns(c) for c in calls])
        return
    dumps = json.dumps
    rows = []
    for c in calls:
        d = c.decision
        rows.append((c.pbx, c.linkedid or c.uniqueid or "unknown", c.uniqueid, _sqlite_utc(c.decided_at), c.caller_raw,
                     d.caller, d.client_id, d.rule or None, d.reason, d.dial, d.timeout, d.fallback or None,
                     round(c.latency_ms, 3), dumps(c.trace())))
    await _bulk_decisions.run(conn, rows)


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
