"""The finished call record: the contract shared by replay, the store, the API and the CRM webhook.

Field meanings are fixed by docs/design.md ("Call record"); extra keys are allowed,
existing ones keep their meaning.
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Direction = Literal["in", "out", "internal"]
Outcome = Literal["answered", "missed", "abandoned", "busy", "failed", "no-answer"]
HangupBy = Literal["caller", "agent", "system"]
LegResult = Literal["answered", "no-answer", "busy", "unavailable", "cancelled", "answered-elsewhere"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class Party(_Frozen):
    number: str | None = None  # E.164 when the raw value is a phone number
    raw: str | None = None     # as the PBX sent it
    name: str | None = None


class RouteInfo(_Frozen):
    rule: str | None = None
    reason: str | None = None
    dial: str | None = None
    latency_ms: float | None = None


class Leg(_Frozen):
    agent: str | None
    device: str
    ring_seconds: float | None
    result: LegResult
    queue: str | None = None


class Transfer(_Frozen):
    kind: Literal["blind", "attended"]
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class CallRecord(_Frozen):
    schema_: int = Field(default=SCHEMA_VERSION, alias="schema")
    pbx: str
    call_id: str
    direction: Direction
    caller: Party
    callee: Party
    client_id: str | None = None
    route: RouteInfo | None = None
    started_at: datetime | None
    answered_at: datetime | None = None
    ended_at: datetime | None
    ring_seconds: float | None
    talk_seconds: float | None
    duration_seconds: float | None
    outcome: Outcome
    hangup_by: HangupBy | None = None
    answered_by: str | None = None
    final_agent: str | None = None
    queue: str | None = None
    agent: str | None = None  # outbound: the manager who placed the call
    legs: tuple[Leg, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    recording: str | None = None
    complete: bool = True
    # why the record is incomplete, for the supervisor reading it (empty when complete)
    gaps: tuple[str, ...] = ()

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)
