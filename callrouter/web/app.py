"""The aiohttp application: routes declared once (`Route`), served and documented from
the same declaration, so the OpenAPI document cannot drift from what is served.

A handler gets the request and a `Ctx` (who is asking, the daemon, the store) and
returns a pydantic model, a list of them, or a ready `web.Response`. Bodies and query
strings are validated by pydantic here; a bad one is a 400 that names the field.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .models import ErrorOut, FieldError

if TYPE_CHECKING:
    from callrouter.daemon import Daemon

    from .auth import Principal

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024  # a bulk upsert of 10,000 clients fits well inside
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Role = Literal["manager", "supervisor", "admin"]
ALL_ROLES: tuple[Role, ...] = ("manager", "supervisor", "admin")
STAFF: tuple[Role, ...] = ("supervisor", "admin")


# what the app carries (set in build_app)
AUTH: web.AppKey[Any] = web.AppKey("auth")
METRICS: web.AppKey[Any] = web.AppKey("metrics")


class ApiError(Exception):
    """An answer other than success: status, message and (for 400) the field."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 errors: Sequence[FieldError] = (), headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.errors = list(errors)
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = ErrorOut(error=self.message, field=self.field, errors=self.errors)
        return web.json_response(body.model_dump(mode="json"), status=self.status, headers=self.headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "(body)"


def invalid(e: ValidationError, prefix: str = "") -> ApiError:
    errors = [FieldError(field=prefix + _loc(err["loc"]), message=err["msg"]) for err in e.errors()]
    first = errors[0]
    return ApiError(400, f"{first.field}: {first.message}", field=first.field, errors=errors)


@dataclass(frozen=True)
class Ctx:
    principal: Principal | None
    daemon: Daemon

    @property
    def store(self) -> Any:
        return self.daemon.store

    @property
    def region(self) -> str:
        return self.daemon.settings.default_region

    @property
    def own_extension(self) -> str | None:
        """A manager's extension: what they may see is limited to it; None for staff. A
        manager without one (a row made around the CLI) may see nothing: 403."""
        p = self.principal
        if p is None or p.user.role != "manager":
            return None
        if not p.user.extension:
            raise ApiError(403, f"manager {p.user.name!r} has no extension: nothing to show")
        return p.user.extension


Handler = Callable[[web.Request, Ctx], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[Role, ...] = ALL_ROLES   # () = public, no token
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None                 # a model, list[model], or None (no body)
    status: int = 200
    csv: bool = False                    # also answers text/csv
    media: str = "application/json"      # of a non-model response (metrics, pages)
    errors: tuple[int, ...] = ()         # documented beyond the ones implied
    alt: dict[int, Any] = field(default_factory=dict)  # status -> model, where not ErrorOut
    tag: str = "api"
    hidden: bool = False                 # served, not in the document (the docs page itself)
    extra: dict[str, Any] = field(default_factory=dict)


async def read_json(request: web.Request) -> Any:
    ctype = request.content_type
    if ctype != "application/json":
        raise ApiError(415, f"send the body as application/json (got {ctype or 'nothing'})")
    try:
        data = json.loads(await request.read())
        # what no database can store: text with a NUL, or a lone surrogate (not UTF-8)
        text = json.dumps(data, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "body has text that is not valid Unicode (a lone surrogate)", field="(body)") from None
    except ValueError as e:
        raise ApiError(400, f"body is not valid JSON: {e}", field="(body)") from None
    if "\\u0000" in text or "\x00" in text:
        raise ApiError(400, "body has a NUL character in a text", field="(body)")
    return data


def check_text(where: str, value: str) -> None:
    """Path and query text: the same rule as bodies."""
    if "\x00" in value:
        raise ApiError(400, f"{where}: has a NUL character", field=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{where}: not valid Unicode", field=where) from None


async def read_body(request: web.Request, model: type[BaseModel], context: dict[str, Any] | None = None,
                    data: Any = None) -> Any:
    if data is None:
        data = await read_json(request)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise invalid(e) from None


def read_query(request: web.Request, model: type[BaseModel]) -> Any:
    data: dict[str, Any] = {}
    for k, v in request.query.items():
        check_text(k, k)
        check_text(k, v)
        if k in data:
            raise ApiError(400, f"{k}: given more than once", field=k)
        data[k] = v
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise invalid(e) from None


def dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


@web.middleware
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except web.HTTPRequestEntityTooLarge:
        return ApiError(413, f"body larger than {MAX_BODY} bytes").response()
    except web.HTTPException as e:
        if e.status >= 400 and e.status != 405:
            return ApiError(e.status, e.reason).response()
        raise
    except Exception:  # noqa: BLE001 - logged; the client gets a 500, the daemon goes on
        log.exception("web: %s %s failed", request.method, request.path)
        return ApiError(500, "internal error (logged)").response()
