"""What the screen-pop, callback and click-to-call endpoints take and send."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .models import Limit, Short


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallbackQuery(_In):
    status: Literal["open", "done", "all"] = "open"
    client: Short | None = Field(default=None, description="client id")
    assignee: Short | None = Field(default=None, description="staff only: an owner's extension or the desk queue")
    limit: Limit = 100
    cursor: Short | None = None


class CallbackOut(BaseModel):
    id: int
    pbx: str
    call_id: str = Field(description="the missed or abandoned call that opened it")
    client_id: str
    assignee: str = Field(description="the client's owner (extension), or the desk queue")
    assignee_kind: Literal["owner", "queue"]
    reason: str = Field(description="the opening call's outcome")
    caller_number: str | None
    call_started_at: datetime | None
    created_at: datetime
    status: Literal["open", "done"]
    closed_at: datetime | None
    closed_by_call: str | None = Field(description="the answered call that closed it")
    closed_by: str | None = Field(description="the user who marked it done")


class CallbackPage(BaseModel):
    items: list[CallbackOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class OriginateIn(_In):
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    phone: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = Field(
        default=None, description="one of the client's phones (any form); default: its first")


class OriginateOut(BaseModel):
    action_id: str = Field(description="the AMI ActionID of the Originate")
    pbx: str
    channel: str = Field(description="the manager's own device, rung first")
    number: str = Field(description="the client's number (E.164) dialled once the manager answers")


class PopsQuery(_In):
    extension: Short | None = Field(default=None, description="staff only: watch one extension (default: all)")
