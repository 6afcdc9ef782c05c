"""/health (no token: for load balancers and monitors) and /metrics (Prometheus)."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .app import METRICS, Ctx, Route
from .models import HealthOut

log = logging.getLogger(__name__)
DB_TIMEOUT = 2.0


async def health(request: web.Request, ctx: Ctx) -> web.Response:
    try:
        await asyncio.wait_for(ctx.store.ping(), DB_TIMEOUT)
        db_ok = True
    except Exception as e:  # noqa: BLE001 - reported, not raised: this is what /health is for
        log.warning("health: database unreachable: %s", type(e).__name__)
        db_ok = False
    pbx = {p.name: p.connected for p in ctx.daemon.snapshot().pbx}
    ok = db_ok and all(pbx.values())
    spool = ctx.daemon.spool
    body = HealthOut(status="ok" if ok else "degraded", database=db_ok, pbx=pbx,
                     spool_depth=spool.depth() if spool is not None else 0)
    return web.json_response(body.model_dump(mode="json"), status=200 if ok else 503)


async def metrics(request: web.Request, ctx: Ctx) -> web.Response:
    registry = request.app[METRICS].registry
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES = [
    Route("GET", "/health", health, "AMI link per PBX and the database; 503 when any is down", roles=(),
          response=HealthOut, alt={503: HealthOut}, tag="operations"),
    Route("GET", "/metrics", metrics, "Prometheus metrics", media="text/plain", tag="operations"),
]
