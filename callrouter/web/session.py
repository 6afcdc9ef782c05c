"""Browser login: POST /login with a token gives a session cookie and a CSRF token;
POST /logout ends it; GET /api/me says who is asking (token or cookie)."""
from __future__ import annotations

from aiohttp import web

from .app import AUTH, Ctx, Route, read_body
from .auth import COOKIE
from .models import LoginIn, LoginOut, Me


async def login(request: web.Request, ctx: Ctx) -> web.Response:
    body: LoginIn = await read_body(request, LoginIn)
    auth = request.app[AUTH]
    user = await auth.check_token(body.token)
    sid, csrf = auth.open_session(user)
    out = LoginOut(name=user.name, role=user.role, extension=user.extension, csrf_token=csrf)
    resp = web.json_response(out.model_dump(mode="json"))
    cfg = ctx.daemon.settings.web
    resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=cfg.secure_cookie, path="/",
                    max_age=int(cfg.session_hours * 3600))
    return resp


async def logout(request: web.Request, ctx: Ctx) -> web.Response:
    assert ctx.principal is not None
    request.app[AUTH].close_session(ctx.principal.session)
    resp = web.Response(status=204)
    resp.del_cookie(COOKIE, path="/")
    return resp


async def me(request: web.Request, ctx: Ctx) -> Me:
    assert ctx.principal is not None
    u = ctx.principal.user
    return Me(name=u.name, role=u.role, extension=u.extension)


ROUTES = [
    Route("POST", "/login", login, "Log a browser in with a token: session cookie + CSRF token", roles=(),
          body=LoginIn, response=LoginOut, errors=(401,), tag="session"),
    Route("POST", "/logout", logout, "End the browser session", status=204, tag="session"),
    Route("GET", "/api/me", me, "Who is asking", response=Me, tag="session"),
]
