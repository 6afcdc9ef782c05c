"""Values the routing core passes around: a client as routing sees it, an agent's presence,
the result of a phone lookup. Plain frozen values: no IO, no clock."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

PresenceState = Literal["idle", "busy", "unavailable", "unknown"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The fields routing needs of a client (the store's Client has more)."""
    id: str
    name: str = ""
    owner_extension: str | None = None
    monthly_turnover: float | None = None
    tier: str | None = None
    problem: bool = False
    blocked: bool = False

    @classmethod
    def of(cls, obj: Any) -> ClientInfo:
        """From the store's Client (attributes), a row mapping or a dict."""
        if isinstance(obj, ClientInfo):
            return obj
        get = obj.get if isinstance(obj, Mapping) else (lambda k, d=None: getattr(obj, k, d))
        turnover = get("monthly_turnover", None)
        return cls(
            id=str(get("id")),
            name=str(get("name", "") or ""),
            owner_extension=(str(get("owner_extension")) if get("owner_extension", None) else None),
            monthly_turnover=float(turnover) if turnover is not None else None,
            tier=get("tier", None) or None,
            problem=bool(get("problem", False)),
            blocked=bool(get("blocked", False)),
        )


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """An extension's presence as routing sees it at one moment."""
    extension: str
    state: PresenceState = "unknown"
    dnd: bool = False
    detail: str = ""  # what the state was learned from, for the decision trace

    @property
    def available(self) -> bool:
        """Can take a call now: not DND, not busy, not unavailable. Nothing known counts as
        available (a PBX that sends no device states must not starve owners of calls)."""
        return not self.dnd and self.state in ("idle", "unknown")

    def describe(self) -> str:
        s = "DND" if self.dnd else self.state
        if self.dnd and self.state != "unknown":
            s += f", {self.state}"
        return f"{s} ({self.detail})" if self.detail else s


@dataclass(frozen=True, slots=True)
class LookupResult:
    """phone -> clients. Several clients = the phone is on several clients: ambiguous."""
    phone: str | None
    clients: tuple[ClientInfo, ...] = ()
    source: str = ""  # "index", "store", "" (nothing looked up)
    missing: tuple[str, ...] = ()  # client ids the index knows but the store no longer has

    @property
    def client(self) -> ClientInfo | None:
        return self.clients[0] if len(self.clients) == 1 else None

    @property
    def ambiguous(self) -> bool:
        return len(self.clients) > 1
