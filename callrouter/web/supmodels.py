"""What the supervisors' endpoints take and send (stats, deals, targets, recordings, live)."""
from __future__ import annotations

import datetime as dt
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from callrouter.crm.models import Extension
from callrouter.records import CallRecord

from .models import Format, Limit, Short, _In

Month = Annotated[str, Field(pattern=r"^20\d\d-(0[1-9]|1[0-2])$", description="YYYY-MM (2000-2099)")]
# calendars end somewhere: years 2000-2099 keep every period's bounds representable
_FIRST, _LAST = dt.date(2000, 1, 1), dt.date(2099, 12, 31)


def _in_range(d: dt.date | None, name: str) -> None:
    if d is not None and not _FIRST <= d <= _LAST:
        raise ValueError(f"{name}: between {_FIRST} and {_LAST}")


class StatsQuery(_In):
    period: Literal["day", "week", "month"] = Field(
        default="month", description="a day, week (Monday first) or month of the PBX's calendar, containing `date`")
    date: dt.date | None = Field(default=None, description="YYYY-MM-DD; default today (PBX time zone)")
    since: AwareDatetime | None = Field(default=None, description="any range instead: from (ISO 8601 with offset)")
    until: AwareDatetime | None = Field(default=None, description="any range instead: to (exclusive)")
    manager: Short | None = Field(default=None, description="only this manager's figures (a manager: their own)")
    pbx: Short | None = None
    format: Format = "json"

    @model_validator(mode="after")
    def _range(self) -> StatsQuery:
        _in_range(self.date, "date")
        for name in ("since", "until"):
            v = getattr(self, name)
            _in_range(v.date() if v is not None else None, name)
        if (self.since is None) != (self.until is None):
            raise ValueError("since and until go together")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class PeriodOut(BaseModel):
    label: str
    since: datetime
    until: datetime
    timezone: str


class StatsRow(BaseModel):
    key: str | None = Field(description="the manager's extension, tier, queue; null: none")
    inbound: int
    inbound_answered: int
    missed: int
    abandoned: int
    outbound: int
    outbound_answered: int
    ring_total_seconds: float = Field(description="over inbound calls answered: how long clients waited")
    ring_avg_seconds: float | None
    talk_total_seconds: float = Field(description="over answered calls, both ways")
    talk_avg_seconds: float | None
    callbacks_done: int = Field(description="missed/abandoned inbound calls followed by an answered call with the "
                                            "same client (either way)")
    callbacks_open: int


class ManagerStatsRow(StatsRow):
    name: str | None = None
    deals: int
    calls_per_deal: float | None = Field(description="(inbound answered + outbound) / deals")


class StatsTable(BaseModel):
    period: PeriodOut
    items: list[StatsRow]


class ManagerStatsTable(BaseModel):
    period: PeriodOut
    team: StatsRow = Field(description="every call of the scope once")
    items: list[ManagerStatsRow]


class CountsRow(BaseModel):
    key: str = Field(description="the local hour (00-23) or day (YYYY-MM-DD)")
    inbound: int
    outbound: int
    answered: int
    missed: int
    abandoned: int


class SeriesTable(BaseModel):
    period: PeriodOut
    items: list[CountsRow]


class NotContactedQuery(_In):
    days: int = Field(default=30, ge=1, le=3650, description="no answered call either way for this many days")
    owner: Short | None = Field(default=None, description="the owner's extension (a manager: their own)")
    limit: Limit = 100
    cursor: Short | None = Field(default=None, description="the last client id of the previous page")
    format: Format = "json"


class NotContactedRow(BaseModel):
    client_id: str
    name: str
    owner_extension: str | None
    tier: str | None
    last_contact: datetime | None = Field(description="the last answered call with them; null: never")


class NotContactedPage(BaseModel):
    items: list[NotContactedRow]
    next_cursor: str | None


class MissedQuery(StatsQuery):
    limit: Limit = 100
    cursor: Short | None = None


class MissedPage(BaseModel):
    items: list[CallRecord]
    next_cursor: str | None


# ------------------------------------------------------------------ deals and targets
class DealIn(_In):
    manager: Extension
    day: Annotated[dt.date, Field(ge=_FIRST, le=_LAST)] = Field(description="the PBX-calendar day the deals were closed")
    deals: int = Field(ge=0, le=1_000_000)


class DealsIn(_In):
    items: list[DealIn] = Field(min_length=1, max_length=10_000)


class DealsQuery(_In):
    month: Month
    manager: Short | None = None
    format: Format = "json"


class DealOut(BaseModel):
    manager: str
    day: dt.date
    deals: int


class WrittenOut(BaseModel):
    written: int


class TargetIn(_In):
    calls: int | None = Field(default=None, ge=0, le=1_000_000, description="inbound answered + outbound")
    talk_minutes: int | None = Field(default=None, ge=0, le=10_000_000)
    deals: int | None = Field(default=None, ge=0, le=1_000_000)


class TargetsQuery(_In):
    month: Month | None = Field(default=None, description="default: this month (PBX time zone)")
    format: Format = "json"


class TargetOut(BaseModel):
    manager: str
    month: Month
    calls_target: int | None
    calls: int
    calls_progress: float | None = Field(description="share of the target reached (1.0 = met)")
    talk_minutes_target: int | None
    talk_minutes: float
    talk_minutes_progress: float | None
    deals_target: int | None
    deals: int
    deals_progress: float | None
    set_by: str | None


# ------------------------------------------------------------------ recordings
class RecordingQuery(_In):
    download: bool = Field(default=False, description="as an attachment (audited as a download)")


class AccessQuery(_In):
    since: AwareDatetime | None = None
    pbx: Short | None = None
    call_id: Short | None = None
    user: Short | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 1000
    format: Format = "json"


class AccessOut(BaseModel):
    at: datetime
    user: str
    role: str
    pbx: str
    call_id: str
    action: Literal["listen", "download"]
    remote: str | None
    range: str | None


# ------------------------------------------------------------------ live
class LiveCallOut(BaseModel):
    pbx: str
    call_id: str
    started_at: datetime | None
    caller: str
    caller_name: str
    ringing: list[str]
    answered: bool


class PresenceOut(BaseModel):
    extension: str
    name: str | None
    state: str
    dnd: bool


class LiveOut(BaseModel):
    pbx: dict[str, bool] = Field(description="AMI connected, per PBX")
    calls: list[LiveCallOut]
    managers: list[PresenceOut]
