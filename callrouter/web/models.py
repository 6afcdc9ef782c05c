"""What the API sends and takes besides the CRM's own inputs (`callrouter.crm.models`)
and the store's own types (`Client`, `CallRecord`), which it uses as they are."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from callrouter.crm.models import ClientIn, Extension, ManagerIn
from callrouter.records import CallRecord, Direction, Outcome
from callrouter.store.clients import Client

# clients in one bulk request (one transaction); bigger files go through `callrouter import`
MAX_BULK = 10_000

Format = Literal["json", "csv"]
Limit = Annotated[int, Field(ge=1, le=1000)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    error: str
    field: str | None = Field(default=None, description="the first field at fault (a 400)")
    errors: list[FieldError] = []


# ------------------------------------------------------------------ auth
class LoginIn(_In):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Me(BaseModel):
    name: str
    role: Literal["manager", "supervisor", "admin"]
    extension: str | None


class LoginOut(Me):
    csrf_token: str = Field(description="send as X-CSRF-Token on POST/PUT/DELETE made with the session cookie")


# ------------------------------------------------------------------ clients
class ClientQuery(_In):
    name: Short | None = Field(default=None, description="substring of the name, any case")
    phone: Short | None = Field(default=None, description="a phone in any form, normalized as routing does")
    owner: Short | None = Field(default=None, description="the owner's extension")
    limit: Limit = 100
    cursor: Short | None = None
    format: Format = "json"


class ClientPage(BaseModel):
    items: list[Client]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class ClientPut(ClientIn):
    """The body of PUT /api/clients/{id}: a ClientIn whose id may be left out (the path's)."""
    id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = Field(
        default=None, description="the path's id; may be left out")


class BulkClientsIn(_In):
    clients: list[ClientIn] = Field(max_length=MAX_BULK)


class BulkOut(BaseModel):
    written: int


# ------------------------------------------------------------------ managers
class ListQuery(_In):
    format: Format = "json"


class ManagerOut(BaseModel):
    extension: str
    name: str | None
    dnd: bool
    devices: list[str]


class ManagerPut(ManagerIn):
    """The body of PUT /api/managers/{extension}: a ManagerIn whose extension may be left out."""
    extension: Extension | None = Field(default=None, description="the path's extension; may be left out")


class DndIn(_In):
    dnd: bool


# ------------------------------------------------------------------ calls
class CallQuery(_In):
    since: AwareDatetime | None = Field(default=None, description="started at or after (ISO 8601 with offset)")
    until: AwareDatetime | None = Field(default=None, description="started before")
    manager: Short | None = Field(default=None, description="answered, held at the end, or rang this extension")
    client: Short | None = Field(default=None, description="client id")
    outcome: Outcome | None = None
    direction: Direction | None = None
    queue: Short | None = None
    complete: bool | None = None
    pbx: Short | None = None
    limit: Limit = 100
    cursor: Short | None = None
    format: Format = "json"


class CallPage(BaseModel):
    items: list[CallRecord]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class DecisionOut(BaseModel):
    decided_at: datetime
    caller_raw: str | None
    caller_number: str | None
    client_id: str | None
    rule: str | None
    reason: str | None
    dial: str | None
    timeout: int | None
    fallback: str | None
    latency_ms: float | None
    trace: dict[str, Any] | None = Field(description="the rules tried and why, and how the answer went")


class CallDetail(BaseModel):
    call: CallRecord
    decisions: list[DecisionOut] = Field(description="routing answers given for this call (by pbx + linkedid)")


# ------------------------------------------------------------------ operations
class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    pbx: dict[str, bool] = Field(description="AMI connected, per PBX")
    spool_depth: int = Field(description="items (records, decisions, leads) waiting in the local spool for the database")
