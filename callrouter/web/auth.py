"""Who is asking: a Bearer token, or a browser session cookie got from POST /login.

- Every request re-reads the user's row (one indexed read), so `callrouter users
  revoke` from another process takes effect at the next request; the scrypt check of
  the token itself runs in a thread once per token, then a digest is remembered.
- Sessions live in this daemon's memory (bounded; a restart logs browsers out). The
  cookie is HttpOnly and SameSite=Strict; a state-changing request made with it must
  also carry the session's CSRF token in `X-CSRF-Token` (Bearer requests need none:
  a browser never adds that header on its own).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from callrouter.store.users import User

from . import tokens
from .app import SAFE_METHODS, ApiError

COOKIE = "callrouter_session"
CSRF_HEADER = "X-CSRF-Token"
_MAX_SESSIONS = 10_000
_MAX_VERIFIED = 10_000


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="callrouter"'})


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    via: Literal["bearer", "cookie"]
    session: str | None = None


@dataclass(slots=True)
class _Session:
    user_id: int
    csrf: str
    expires: float


class Authenticator:
    def __init__(self, store: Any, session_seconds: float):
        self._store = store
        self._session_seconds = session_seconds
        self._verified: OrderedDict[str, bytes] = OrderedDict()   # token_id -> sha256(secret)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    # ---------------------------------------------------------------- tokens
    async def check_token(self, token: str) -> User:
        parts = tokens.split_token(token)
        if parts is None:
            raise unauthorized("malformed token")
        token_id, secret = parts
        found = await self._store.user_by_token_id(token_id)
        if found is None:
            raise unauthorized("unknown token")
        user, stored_hash = found
        if not user.active:
            raise unauthorized("token revoked")
        digest = hashlib.sha256(secret.encode()).digest()
        known = self._verified.get(token_id)
        if known is None or not hmac.compare_digest(known, digest):
            if not await asyncio.to_thread(tokens.verify_secret, secret, stored_hash):
                raise unauthorized("unknown token")
            self._verified[token_id] = digest
            while len(self._verified) > _MAX_VERIFIED:
                self._verified.popitem(last=False)
        return user

    # ---------------------------------------------------------------- sessions
    def open_session(self, user: User) -> tuple[str, str]:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._sessions[sid] = _Session(user.id, csrf, time.monotonic() + self._session_seconds)
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid, csrf

    def close_session(self, sid: str | None) -> None:
        if sid is not None:
            self._sessions.pop(sid, None)

    async def _from_session(self, request: web.Request, sid: str) -> Principal:
        s = self._sessions.get(sid)
        if s is None or s.expires < time.monotonic():
            self._sessions.pop(sid, None)
            raise unauthorized("session expired or unknown: log in again")
        user = await self._store.user_by_id(s.user_id)
        if user is None or not user.active:
            self._sessions.pop(sid, None)
            raise unauthorized("token revoked")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), s.csrf.encode()):
                raise ApiError(403, f"CSRF check failed: send the session's csrf_token as {CSRF_HEADER}")
        return Principal(user, "cookie", sid)

    # ---------------------------------------------------------------- a request
    async def principal(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthorized("use Authorization: Bearer <token>")
            return Principal(await self.check_token(token.strip()), "bearer")
        sid = request.cookies.get(COOKIE)
        if sid:
            return await self._from_session(request, sid)
        raise unauthorized("no token: send Authorization: Bearer <token>")
