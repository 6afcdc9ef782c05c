"""When a finished call opens or closes a callback task (pure: values in, values out).

- Opens: an inbound call from a known client (exactly one client has the number, or the
  router named it) that ended `missed` or `abandoned`: for the client's owner, or for the
  desk queue when the client has none.
- Closes: an answered call with that client, inbound or outbound: every callback of the
  client opened before it (the store applies it, see store/callbacks.py).
Anything else (unknown callers, internal calls, other outcomes) does nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from callrouter.records import CallRecord

OPENING = frozenset({"missed", "abandoned"})


@dataclass(frozen=True, slots=True)
class NewCallback:
    pbx: str
    call_id: str
    client_id: str
    assignee: str
    assignee_kind: Literal["owner", "queue"]
    reason: str
    caller_number: str | None
    call_started_at: datetime | None


@dataclass(frozen=True, slots=True)
class CloseBy:
    """An answered call with the client: closes what it had open before."""
    client_id: str
    call_id: str
    started_at: datetime | None


def client_number(record: CallRecord) -> str | None:
    """The client's side of the call: the caller inbound, the callee outbound."""
    if record.direction == "in":
        return record.caller.number
    if record.direction == "out":
        return record.callee.number
    return None


def callback_action(record: CallRecord, client_id: str | None, owner: str | None,
                    desk: str) -> NewCallback | CloseBy | None:
    """`client_id`/`owner`: the call's client (record.client_id, else found by the client's
    number) and its owner's extension."""
    if client_id is None or record.direction == "internal":
        return None
    if record.outcome == "answered":
        return CloseBy(client_id, record.call_id, record.started_at)
    if record.direction == "in" and record.outcome in OPENING:
        return NewCallback(pbx=record.pbx, call_id=record.call_id, client_id=client_id,
                           assignee=owner or desk, assignee_kind="owner" if owner else "queue",
                           reason=record.outcome, caller_number=record.caller.number,
                           call_started_at=record.started_at)
    return None
