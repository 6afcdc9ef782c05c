"""The manager's page: static HTML, JS and CSS in the package (no build step, nothing
fetched from anywhere but this daemon). The page holds no data when served: it logs in
with a token (POST /login), then reads the API and the pop WebSocket itself.

Every CRM and caller field is put on the page with `textContent`, never as markup, and
the Content-Security-Policy allows only this origin's own script and style (no inline
script, no eval), so a caller name like `<img src=x onerror=alert(1)>` is only text."""
from __future__ import annotations

from importlib.resources import files

from aiohttp import web

import callrouter

from .app import Ctx, Route

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
_FILES = {"manager.html": "text/html", "manager.js": "text/javascript", "manager.css": "text/css"}


def _read(name: str) -> str:
    return files(callrouter).joinpath(f"web/static/{name}").read_text(encoding="utf-8")


def _serve(name: str):
    body = _read(name)

    async def handler(request: web.Request, ctx: Ctx) -> web.Response:
        return web.Response(text=body, content_type=_FILES[name], headers=_HEADERS)
    handler.__name__ = "page_" + name.replace(".", "_")
    return handler


ROUTES = [
    Route("GET", "/manager", _serve("manager.html"), "The manager's page", roles=(), hidden=True),
    Route("GET", "/static/manager.js", _serve("manager.js"), "The manager's page: script", roles=(), hidden=True),
    Route("GET", "/static/manager.css", _serve("manager.css"), "The manager's page: style", roles=(), hidden=True),
]
