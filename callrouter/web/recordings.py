"""Call recordings: GET /api/calls/{pbx}/{call_id}/recording streams the call's recording
with HTTP Range (aiohttp's FileResponse: 206 for a range, 416 for one it cannot satisfy),
so the browser's player seeks. Every listen and download writes an audit row (who, which
call, when, from where, which range), readable by admins at /api/recordings/access.

The stored path is the PBX's (MIXMONITOR_FILENAME): never trusted. It is resolved against
`[recordings] dir` with every symlink followed and must land inside that directory (a
`../`, an absolute path elsewhere, a symlink pointing out: refused, 403). Nothing is
percent-decoded: a stored `%2e%2e/` is a file name, not a way up. A call the asker may not
see is 404, as in the call API; a file that is not there is 404 too, never a 500."""
from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from callrouter.store.supervise import Access, list_access, record_access

from .app import ApiError, Ctx, Route, not_found, read_query
from .csvout import csv_response, wants_csv
from .stats import _rows
from .supmodels import AccessOut, AccessQuery, RecordingQuery

log = logging.getLogger(__name__)


class Refused(Exception):
    """The stored path does not resolve inside the recordings directory."""


def resolve(root: str, stored: str) -> str:
    """The real path of `stored` (absolute, or relative to `root`), which must lie inside
    `root` (both resolved through symlinks); else Refused. Pure path logic plus
    `realpath`, which reads the links on disk."""
    if not root:
        raise Refused("no recordings directory configured ([recordings] dir)")
    if not stored or "\x00" in stored:
        raise Refused("empty or NUL in the stored path")
    base = os.path.realpath(root)
    real = os.path.realpath(stored if os.path.isabs(stored) else os.path.join(base, stored))
    if real == base or os.path.commonpath([base, real]) != base:
        raise Refused("outside the recordings directory")
    return real


async def recording(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    q: RecordingQuery = read_query(request, RecordingQuery)
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    found = await ctx.store.call_with_decisions(pbx, call_id, visible_to=ctx.own_extension)
    if found is None:
        raise not_found(f"call {pbx}/{call_id}")
    record = found[0]
    if not record.recording:
        raise ApiError(404, f"call {pbx}/{call_id} has no recording")
    try:
        path = resolve(ctx.daemon.settings.recordings.dir, record.recording)
    except Refused as e:
        log.warning("recording of %s/%s refused: %r: %s", pbx, call_id, record.recording, e)
        raise ApiError(403, f"the recording of call {pbx}/{call_id} is not inside the recordings directory: "
                            "refused") from None
    if not os.path.isfile(path):
        raise ApiError(404, f"the recording of call {pbx}/{call_id} is not on disk")
    assert ctx.principal is not None
    user = ctx.principal.user
    remote = request.remote
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        remote = f"{remote} (forwarded for {forwarded[:200]})"
    await record_access(ctx.store.engine, Access(datetime.now(UTC), user.name, user.role, pbx, call_id,
                                                 "download" if q.download else "listen", remote,
                                                 request.headers.get("Range", "")[:200] or None))
    headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    if q.download:
        name = os.path.basename(path).replace('"', "")
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return web.FileResponse(path, headers=headers)


async def access_log(request: web.Request, ctx: Ctx) -> Any:
    q: AccessQuery = read_query(request, AccessQuery)
    rows = await list_access(ctx.store.engine, since=q.since, pbx=q.pbx, call_id=q.call_id, user=q.user,
                             limit=q.limit)
    items = [AccessOut(at=a.at, user=a.user_name, role=a.role, pbx=a.pbx, call_id=a.call_id,
                       action=a.action, remote=a.remote, range=a.range) for a in rows]  # type: ignore[arg-type]
    if wants_csv(request, q.format):
        return await csv_response(request, "recording-access.csv", tuple(AccessOut.model_fields), _rows(items))
    return items


ROUTES = [
    Route("GET", "/api/calls/{pbx}/{call_id}/recording", recording,
          "The call's recording (HTTP Range; audited); 403 when its stored path is outside the recordings "
          "directory", query=RecordingQuery, media="audio/*", errors=(403, 404, 416), tag="recordings"),
    Route("GET", "/api/recordings/access", access_log, "Who listened to or downloaded which recording (admins)",
          roles=("admin",), query=AccessQuery, response=list[AccessOut], csv=True, tag="recordings"),
]
