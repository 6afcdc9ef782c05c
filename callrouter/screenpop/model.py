"""The screen-pop payload (`Pop`), the same JSON on MQTT and on the WebSocket, and the
pure function that makes one from a tracker fact. A change of meaning bumps `schema`."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from callrouter.tracker import AgentAnswered, AgentEnded, AgentRinging

POP_SCHEMA = 1

PopEvent = Literal["ringing", "answered", "ended"]
# ok: card with history; no-history: card from memory, the store did not answer in time
# (or failed); no-client: the caller is no known client (or several share the number)
CardStatus = Literal["ok", "no-history", "no-client"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class PopCaller(_Out):
    number: str | None = Field(description="E.164 when the caller ID is a phone number")
    raw: str | None = Field(description="caller ID number as the PBX sent it")
    name: str | None = Field(description="caller ID name as sent: text, never markup")


class RecentCall(_Out):
    call_id: str
    started_at: datetime | None
    direction: Literal["in", "out", "internal"]
    outcome: str
    agent: str | None = Field(description="who took it (answered_by, else final_agent / the outbound manager)")


class OpenCallback(_Out):
    id: int
    created_at: datetime
    call_id: str
    reason: str = Field(description="the outcome of the call that opened it: missed, abandoned, busy…")
    assignee: str = Field(description="the owner's extension, or the desk queue")


class RouteWhy(_Out):
    rule: str | None
    reason: str | None
    trace: list[str] = Field(default=[], description="the rules tried, in order")


class Card(_Out):
    id: str
    name: str
    monthly_turnover: float | None
    tier: str | None
    owner: str | None
    recent_calls: list[RecentCall] = Field(default=[], description="the last five, newest first")
    open_callbacks: list[OpenCallback] = []


class Pop(_Out):
    schema_: int = Field(default=POP_SCHEMA, alias="schema")
    pbx: str
    extension: str = Field(description="the agent whose phone this is about")
    event: PopEvent
    call_id: str = Field(description="the call record's call_id (linkedid of its first channel)")
    device: str
    at: datetime | None
    caller: PopCaller | None = Field(description="null on `ended` (the ringing pop said it)")
    client_id: str | None = None
    result: str | None = Field(default=None, description="`ended` only: answered, cancelled, no-answer, busy…")
    # ringing only
    card: Card | None = None
    card_status: CardStatus | None = None
    route: RouteWhy | None = None

    def json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


LiveFact = AgentRinging | AgentAnswered | AgentEnded
_EXTENSIONISH = re.compile(r"[0-9]{2,6}")


def is_agent_pop(fact: LiveFact, extensions: frozenset[str] = frozenset()) -> bool:
    """A Dial to a queue's Local channel (`Local/retail@queues`) is plumbing: the tracker
    names it by its resource ("retail") before it can know that it dials on, and nobody's
    screen belongs to it. A follow-me `Local/101@phones` is a person."""
    if not fact.device.lower().startswith("local/"):
        return True
    return fact.agent in extensions or bool(_EXTENSIONISH.fullmatch(fact.agent))


def make_pop(fact: LiveFact, *, card: Card | None = None, card_status: CardStatus | None = None,
             route: RouteWhy | None = None) -> Pop:
    base = dict(pbx=fact.pbx, extension=fact.agent, call_id=fact.call_id, device=fact.device, at=fact.at)
    if isinstance(fact, AgentEnded):
        return Pop(event="ended", caller=None, result=fact.result, **base)
    caller = PopCaller(number=fact.caller.number, raw=fact.caller.raw, name=fact.caller.name)
    client_id = card.id if card is not None else fact.client_id
    if isinstance(fact, AgentAnswered):
        return Pop(event="answered", caller=caller, client_id=client_id, **base)
    return Pop(event="ringing", caller=caller, client_id=client_id, card=card,
               card_status=card_status or ("ok" if card else "no-client"), route=route, **base)
