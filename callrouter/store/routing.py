"""What the router decided (audit trail per call) and the leads it created."""
from __future__ import annotations

from collections.abc import Sequence

from pydantic import AwareDatetime, BaseModel, ConfigDict, JsonValue
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ._upsert import insert_for
from .schema import Lead, RouteDecision

_decisions = RouteDecision.__table__
_leads = Lead.__table__

class RouteDecisionRow(BaseModel):
    """One FastAGI routing answer, with the trace of the rules that produced it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pbx: str
    linkedid: str
    decided_at: AwareDatetime
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
    trace: JsonValue = None

async def save_route_decision(conn: AsyncConnection, row: RouteDecisionRow) -> None:
    # model_dump (python mode) keeps decided_at a datetime for the column type
    await conn.execute(insert(_decisions).values(**row.model_dump()))

async def save_route_decisions(conn: AsyncConnection, rows: Sequence[RouteDecisionRow]) -> None:
    """Many decisions in one statement (the FastAGI decision log writes its backlog so)."""
    if rows:
        await conn.execute(insert(_decisions), [row.model_dump() for row in rows])


async def save_leads(conn: AsyncConnection, leads: Sequence[tuple[str, str, str | None, str | None]]) -> int:
    """(pbx, phone, raw, call_id) leads in one statement; the first lead per (pbx, phone)
    wins, as in save_lead. Returns how many were new."""
    if not leads:
        return 0
    ins = insert_for(conn.dialect, _leads)
    rows = [dict(pbx=p, phone=ph, raw=r, call_id=c) for p, ph, r, c in leads]
    result = await conn.execute(ins.values(rows).on_conflict_do_nothing(index_elements=["pbx", "phone"])
                                .returning(_leads.c.id))
    return len(result.all())


async def save_lead(conn: AsyncConnection, pbx: str, phone: str, raw: str | None,
                    call_id: str | None) -> bool:
    """Record a lead for an unknown caller; True if it is new. A caller who rings again
    keeps the first lead (and its first call_id)."""
    ins = insert_for(conn.dialect, _leads)
    result = await conn.execute(
        ins.values(pbx=pbx, phone=phone, raw=raw, call_id=call_id)
        .on_conflict_do_nothing(index_elements=["pbx", "phone"]).returning(_leads.c.id))
    return result.first() is not None

