"""Supervisors' periods in the PBX's time zone (pure: values in, values out).

A day, a week (Monday first) or a month on the PBX's calendar, or any range, becomes a
half-open UTC interval [since, until) that the store compares `started_at` with. Hour of
day and day series are folded here from 15-minute UTC buckets counted by the database:
every time zone's offset is a multiple of 15 minutes, so a bucket never straddles a local
hour, and SQLite (which knows no time zones) gets the same answer as PostgreSQL.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PeriodKind = Literal["day", "week", "month"]
BUCKET_SECONDS = 900


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime  # UTC, inclusive
    until: datetime  # UTC, exclusive
    label: str


def _midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


def month_start(d: date) -> date:
    return d.replace(day=1)


def next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def calendar_period(kind: PeriodKind, day: date, tz: ZoneInfo) -> Period:
    """The day, week or month (of the PBX's calendar) that contains `day`."""
    if kind == "day":
        first, end, label = day, day + timedelta(days=1), day.isoformat()
    elif kind == "week":
        first = day - timedelta(days=day.weekday())
        end = first + timedelta(days=7)
        iso = first.isocalendar()
        label = f"{iso.year}-W{iso.week:02d}"
    else:
        first, end = month_start(day), next_month(day)
        label = f"{first.year}-{first.month:02d}"
    return Period(_midnight(first, tz), _midnight(end, tz), label)


def range_period(since: datetime, until: datetime) -> Period:
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until need a UTC offset")
    if until <= since:
        raise ValueError("until must be after since")
    return Period(since.astimezone(UTC), until.astimezone(UTC), f"{since.isoformat()}/{until.isoformat()}")


def today(now: datetime, tz: ZoneInfo) -> date:
    return now.astimezone(tz).date()


def days_of(period: Period, tz: ZoneInfo) -> tuple[date, date]:
    """The PBX-calendar days [first, last] the period touches (deal counts are per day)."""
    first = period.since.astimezone(tz).date()
    last = (period.until - timedelta(microseconds=1)).astimezone(tz).date()
    return first, last


# ------------------------------------------------------------------ buckets
@dataclass(frozen=True, slots=True)
class Counts:
    inbound: int = 0
    outbound: int = 0
    answered: int = 0
    missed: int = 0
    abandoned: int = 0

    def __add__(self, o: Counts) -> Counts:
        return Counts(self.inbound + o.inbound, self.outbound + o.outbound, self.answered + o.answered,
                      self.missed + o.missed, self.abandoned + o.abandoned)


def bucket_start(bucket: int) -> datetime:
    return datetime.fromtimestamp(bucket * BUCKET_SECONDS, UTC)


def by_hour_of_day(buckets: Iterable[tuple[int, Counts]], tz: ZoneInfo) -> list[Counts]:
    """24 entries: index = the local hour the calls started in."""
    out = [Counts()] * 24
    for b, c in buckets:
        h = bucket_start(b).astimezone(tz).hour
        out[h] = out[h] + c
    return out


def by_day(buckets: Iterable[tuple[int, Counts]], tz: ZoneInfo, period: Period) -> list[tuple[date, Counts]]:
    """Every local day of the period (empty days too), in order."""
    first, last = days_of(period, tz)
    n = (last - first).days + 1
    out: list[Counts] = [Counts()] * n
    for b, c in buckets:
        i = (bucket_start(b).astimezone(tz).date() - first).days
        if 0 <= i < n:
            out[i] = out[i] + c
    return [(first + timedelta(days=i), c) for i, c in enumerate(out)]


def ratio(part: float, whole: float) -> float | None:
    return None if not whole else part / whole


def progress(actual: float, target: int | None) -> float | None:
    """Share of a target reached (1.0 = met); None without a target."""
    return None if not target else actual / target


def mean(total: float, n: int) -> float | None:
    return None if n == 0 else total / n


def sum_counts(items: Sequence[Counts]) -> Counts:
    total = Counts()
    for c in items:
        total = total + c
    return total
