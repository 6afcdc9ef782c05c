"""The REST API inside the daemon (aiohttp): the CRM's way in.

    server = WebServer(daemon)          # its settings: daemon.settings.web
    await server.start()      # bound and serving (Daemon.run)
    await server.close()      # stops accepting, finishes requests in flight (Daemon._stop)

Layout: `app.py` (routes declared once, validation, errors), `auth.py` (tokens,
sessions, CSRF), `tokens.py` (making and hashing tokens), one module per resource
(`clients`, `managers`, `calls`, `session`, `ops`, `callbacks`; `pops`: the screen-pop
WebSocket and click-to-call; `page`: the manager's page), `openapi.py` (the document and the
docs page), `metrics.py` (Prometheus), `csvout.py` (CSV of any list). Supervisors: `stats`,
`targets` (deals and targets), `recordings` (Range, audit), `dashboard` (the page, its
files, /api/live), their models in `supmodels`.
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .app import AUTH, MAX_BODY, METRICS, Ctx, Route, dump, errors_middleware

log = logging.getLogger(__name__)
SHUTDOWN_GRACE = 2.0  # s: requests in flight finish within this when the daemon stops


def _routes() -> list[Route]:
    from . import calls, callbacks, clients, managers, ops, page, pops, session
    return [*session.ROUTES, *clients.ROUTES, *managers.ROUTES, *pops.ROUTES, *calls.ROUTES, *callbacks.ROUTES,
            *ops.ROUTES, *page.ROUTES, *_supervisors()]


def _supervisors() -> list[Route]:
    """Statistics, deals and targets, recordings, the dashboard."""
    from . import dashboard, recordings, stats, targets
    return [*stats.ROUTES, *targets.ROUTES, *recordings.ROUTES, *dashboard.ROUTES]


def _serve(route: Route, daemon: Any):
    async def handler(request: web.Request) -> web.StreamResponse:
        from .app import ApiError, check_text

        principal = None
        if route.roles:
            principal = await request.app[AUTH].principal(request)
            if principal.user.role not in route.roles:
                raise ApiError(403, f"role {principal.user.role} may not {route.method} {route.path}")
        for name, value in request.match_info.items():
            check_text(name, value)
        out = await route.handler(request, Ctx(principal, daemon))
        if isinstance(out, web.StreamResponse):
            return out
        if out is None:
            return web.Response(status=route.status)
        return web.json_response(dump(out), status=route.status)
    handler.__name__ = route.handler.__name__
    return handler


def build_app(daemon: Any) -> web.Application:
    from .auth import Authenticator
    from .metrics import Metrics
    from .openapi import build_document, docs_page

    cfg = daemon.settings.web
    app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_BODY)
    app[AUTH] = Authenticator(daemon.store, cfg.session_hours * 3600)
    app[METRICS] = Metrics(daemon)
    routes = _routes()
    page = docs_page()

    async def openapi_json(request: web.Request, ctx: Ctx) -> web.Response:
        return web.json_response(document)

    async def docs(request: web.Request, ctx: Ctx) -> web.Response:
        # a static shell with no data in it: it logs in and reads /openapi.json itself
        return web.Response(text=page, content_type="text/html",
                            headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                                "style-src 'unsafe-inline'"})

    routes += [Route("GET", "/openapi.json", openapi_json, "This document", media="application/json",
                     tag="documentation"),
               Route("GET", "/docs", docs, "The API docs page", roles=(), hidden=True)]
    document = build_document(routes)
    for r in routes:
        app.router.add_route(r.method, r.path, _serve(r, daemon))
    return app


class WebServer:
    def __init__(self, daemon: Any):
        self._daemon = daemon
        self._cfg = daemon.settings.web
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app: web.Application | None = None

    async def start(self) -> None:
        self.app = build_app(self._daemon)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._cfg.host, self._cfg.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("web API on http://%s:%d (docs at /docs)", self._cfg.host, self.port)

    def on_decision(self, call: Any) -> None:
        """FastAGI hook: the route latency histogram."""
        if self.app is not None:
            self.app[METRICS].on_decision(call)

    async def close(self) -> None:
        if self._runner is not None:
            from .pops import close_sockets
            await close_sockets(self._daemon.pops)
            await self._runner.cleanup()
            self._runner = None
