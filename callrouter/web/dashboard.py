"""The supervisor dashboard: static HTML, JS and CSS shipped in the package (no build
step; the charting library, uPlot 1.6.32 (MIT, `static/uPlot.LICENSE`), is vendored), under
a strict Content-Security-Policy (scripts, styles, media and requests from this daemon
only; no inline script). The page holds no data: it logs in with a token (POST /login)
and reads the API like any client; live calls and presence come from GET /api/live,
polled every few seconds (the daemon's in-memory snapshot, no database work)."""
from __future__ import annotations

from importlib.resources import files

from aiohttp import web

import callrouter

from .app import STAFF, ApiError, Ctx, Route
from .supmodels import LiveCallOut, LiveOut, PresenceOut

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
ASSETS = ("dashboard.js", "dashboard.css", "uPlot.iife.min.js", "uPlot.min.css")


def _asset(name: str) -> bytes:
    return files(callrouter).joinpath(f"web/static/{name}").read_bytes()


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


async def page(request: web.Request, ctx: Ctx) -> web.Response:
    return web.Response(body=_asset("dashboard.html"), content_type="text/html", charset="utf-8", headers=_headers())


async def asset(request: web.Request, ctx: Ctx) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:  # a fixed list: no path from the request ever reaches the file system
        raise ApiError(404, f"{name} not found")
    ctype = _TYPES[name[name.rindex("."):]]
    return web.Response(body=_asset(name), content_type=ctype, charset="utf-8", headers=_headers())


async def live(request: web.Request, ctx: Ctx) -> LiveOut:
    snap = ctx.daemon.snapshot()
    managers = {m.extension: m.name for m in await ctx.store.list_managers()}
    calls = [LiveCallOut(pbx=c.pbx, call_id=c.call_id, started_at=c.started_at, caller=c.caller_raw,
                         caller_name=c.caller_name, ringing=list(c.ringing), answered=c.answered)
             for p in snap.pbx for c in p.live_calls]
    presence = []
    for ext in sorted(set(managers) | set(snap.presence)):
        st = snap.presence.get(ext)
        presence.append(PresenceOut(extension=ext, name=managers.get(ext), state=st.state if st else "unknown",
                                    dnd=bool(st and st.dnd)))
    return LiveOut(pbx={p.name: p.connected for p in snap.pbx}, calls=calls, managers=presence)


ROUTES = [
    Route("GET", "/dashboard", page, "The supervisor dashboard", roles=(), media="text/html", hidden=True),
    Route("GET", "/dashboard/{name}", asset, "The dashboard's files", roles=(), hidden=True),
    Route("GET", "/api/live", live, "Calls in progress and every manager's presence now", roles=STAFF,
          response=LiveOut, tag="stats"),
]
