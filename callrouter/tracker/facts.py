"""What the tracker reports: live facts while a call runs, and the finished record."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from callrouter.records import CallRecord, Party


@dataclass(frozen=True, slots=True)
class AgentRinging:
    pbx: str
    call_id: str
    agent: str
    device: str
    caller: Party
    client_id: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class AgentAnswered:
    pbx: str
    call_id: str
    agent: str
    device: str
    caller: Party
    client_id: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class AgentEnded:
    """The agent's leg is over: answered and hung up, or stopped ringing (result says which)."""
    pbx: str
    call_id: str
    agent: str
    device: str
    result: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class CallFinished:
    record: CallRecord
    # every uniqueid and linkedid the call had: what other systems (the router's decision
    # log) may have keyed it by
    ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call in flight, as a snapshot for dashboards (not a fact: nothing happened)."""
    pbx: str
    call_id: str
    started_at: datetime | None
    caller_raw: str
    caller_name: str
    ringing: tuple[str, ...]   # agents whose phone rings now
    answered: bool


Fact = AgentRinging | AgentAnswered | AgentEnded | CallFinished
