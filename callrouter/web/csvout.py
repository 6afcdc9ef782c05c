"""Any list as CSV (`Accept: text/csv` or `?format=csv`): streamed, every matching row,
not one page. UTF-8 with a BOM, so spreadsheet programs read Cyrillic names right."""
from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

CLIENT_COLUMNS = ("id", "name", "phones", "owner_extension", "monthly_turnover", "tier", "problem", "blocked")
MANAGER_COLUMNS = ("extension", "name", "dnd", "devices")
CALL_COLUMNS = ("pbx", "call_id", "direction", "caller", "callee", "client_id", "started_at", "answered_at",
                "ended_at", "ring_seconds", "talk_seconds", "duration_seconds", "outcome", "hangup_by",
                "answered_by", "final_agent", "queue", "agent", "recording", "complete", "route_rule",
                "route_reason", "route_dial", "route_latency_ms", "legs", "transfers", "gaps")


def wants_csv(request: web.Request, fmt: str) -> bool:
    return fmt == "csv" or "text/csv" in request.headers.get("Accept", "")


def _cell(v: Any) -> Any:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ";".join(str(x) for x in v)
    return "" if v is None else v


def call_row(doc: dict[str, Any]) -> dict[str, Any]:
    """A call record's JSON flattened to the CSV columns."""
    route = doc.get("route") or {}
    row = {k: doc.get(k) for k in CALL_COLUMNS}
    row["caller"] = (doc.get("caller") or {}).get("number") or (doc.get("caller") or {}).get("raw")
    row["callee"] = (doc.get("callee") or {}).get("number") or (doc.get("callee") or {}).get("raw")
    for k in ("rule", "reason", "dial", "latency_ms"):
        row[f"route_{k}"] = route.get(k)
    row["legs"] = [f"{leg.get('agent') or leg.get('device')}:{leg.get('result')}" for leg in doc.get("legs", ())]
    row["transfers"] = [f"{t.get('kind')}:{t.get('from')}>{t.get('to')}" for t in doc.get("transfers", ())]
    return row


async def csv_response(request: web.Request, filename: str, columns: Sequence[str],
                       rows: AsyncIterator[dict[str, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": f'attachment; filename="{filename}"'})
    await resp.prepare(request)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    buf.write("\ufeff")
    w.writeheader()
    n = 0
    async for row in rows:
        w.writerow({k: _cell(row.get(k)) for k in columns})
        n += 1
        if n % 500 == 0:
            await resp.write(buf.getvalue().encode())
            buf.seek(0)
            buf.truncate()
    await resp.write(buf.getvalue().encode())
    await resp.write_eof()
    return resp
