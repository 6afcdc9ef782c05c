"""Supervisors' statistics: SQL aggregates over `calls` (and `call_legs`, `clients`,
`deals`), the same statements on SQLite and PostgreSQL. Periods arrive as UTC bounds
already resolved in the PBX's time zone (`callrouter.periods`).

Who a call counts for (docs/design.md "Supervisor statistics"):
- an inbound call answered counts for `answered_by`; an inbound call nobody answered
  (missed, abandoned, busy, failed) counts for every manager it rang (a leg of theirs),
  so a manager's `inbound` = answered by them + rang them and nobody answered;
- an outbound call counts for `final_agent` (the manager who placed it);
- ring time (how long clients waited) is over inbound calls answered; talk time over
  answered calls both ways.
A missed or abandoned inbound call is *called back* when a later answered call, either
way, is with the same client: the same `client_id`, or the same outside number
(`peer_number`, since outbound calls carry no client id). Computed from the calls
themselves, so it does not depend on a callbacks table.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, and_, case, cast, exists, func, null, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.periods import BUCKET_SECONDS, Counts, Period
from callrouter.records import CallRecord

from .schema import Call, CallLeg, ClientPhone, ClientRow, DealCount, LastAnswered, Manager

_calls = Call.__table__
_legs = CallLeg.__table__
_clients = ClientRow.__table__
_phones = ClientPhone.__table__
_deals = DealCount.__table__
_managers = Manager.__table__
_last = LastAnswered.__table__
c = _calls.c

UNANSWERED_MISSES = ("missed", "abandoned")   # what a callback answers


# ------------------------------------------------------------------ results
@dataclass(frozen=True, slots=True)
class Aggregate:
    """Figures of a set of calls (a manager's, a tier's, a queue's, the team's)."""
    key: str | None
    inbound: int = 0
    inbound_answered: int = 0
    missed: int = 0
    abandoned: int = 0
    outbound: int = 0
    outbound_answered: int = 0
    ring_total: float = 0.0     # seconds, over inbound calls answered
    ring_count: int = 0
    talk_total: float = 0.0     # seconds, over answered calls both ways
    talk_count: int = 0
    callbacks_done: int = 0     # missed/abandoned inbound calls called back later
    callbacks_open: int = 0     # ... not (yet) called back
    deals: int | None = None    # managers only: deals the CRM pushed for the period


@dataclass(frozen=True, slots=True)
class NotContacted:
    client_id: str
    name: str
    owner_extension: str | None
    tier: str | None
    last_contact: datetime | None   # the last answered call with them, either way; None: never


@dataclass(frozen=True, slots=True)
class StatsScope:
    period: Period
    visible_to: str | None = None   # a manager: only calls involving them
    manager: str | None = None      # a filter: only this manager's figures
    pbx: str | None = None
    managers: Sequence[str] = field(default=())  # always listed (zero rows), e.g. every manager


# ------------------------------------------------------------------ helpers
def _n(cond: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def _total(cond: ColumnElement[bool], col: Any) -> Any:
    return func.coalesce(func.sum(case((cond, col), else_=0.0)), 0.0)


def called_back() -> ColumnElement[bool]:
    """A later answered call with the same client (by id, or by outside number): the
    key's latest answered call (`last_answered`, kept by the call writer) started after
    this one."""
    la = _last.alias("la")
    return or_(*(exists().where(la.c.kind == kind, la.c.key == col, la.c.started_at > c.started_at)
                 for kind, col in (("client", c.client_id), ("number", c.peer_number))))


def _involves(extension: str) -> ColumnElement[bool]:
    """The call list's rule (store.queries): answered, held at the end, or rang them. The
    legs as an uncorrelated IN, which PostgreSQL hashes once per statement, rather than an
    EXISTS probed for every call of the period."""
    return or_(c.answered_by == extension, c.final_agent == extension,
               c.id.in_(select(_legs.c.call_id).where(_legs.c.agent == extension)))


def _scoped(stmt: Any, s: StatsScope) -> Any:
    # internal calls (manager to manager) are no client's call: counted nowhere here
    stmt = stmt.where(c.started_at >= s.period.since, c.started_at < s.period.until, c.direction.in_(("in", "out")))
    if s.pbx is not None:
        stmt = stmt.where(c.pbx == s.pbx)
    if s.visible_to is not None:
        stmt = stmt.where(_involves(s.visible_to))
    return stmt


_IN = c.direction == "in"
_OUT = c.direction == "out"
_ANS = c.outcome == "answered"
_MISS = c.outcome.in_(UNANSWERED_MISSES)


def _figures(with_callbacks: bool) -> list[Any]:
    cols = [_n(_IN), _n(_IN & _ANS), _n(_IN & (c.outcome == "missed")), _n(_IN & (c.outcome == "abandoned")),
            _n(_OUT), _n(_OUT & _ANS),
            _total(_IN & _ANS, func.coalesce(c.ring_seconds, 0.0)), _n(_IN & _ANS & c.ring_seconds.is_not(None)),
            _total(_ANS, func.coalesce(c.talk_seconds, 0.0)), _n(_ANS & c.talk_seconds.is_not(None))]
    if with_callbacks:
        # the EXISTS once per missed call: open = misses - done
        cols += [_n(_IN & _MISS & called_back()), _n(_IN & _MISS)]
    return cols


def _aggregate(key: Any, row: Sequence[Any], with_callbacks: bool) -> Aggregate:
    v = list(row)
    cb = (int(v[10]), int(v[11]) - int(v[10])) if with_callbacks else (0, 0)
    return Aggregate(key, int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), int(v[5]), float(v[6]), int(v[7]),
                     float(v[8]), int(v[9]), *cb)


# ------------------------------------------------------------------ queries
async def team(conn: AsyncConnection, s: StatsScope, with_callbacks: bool = True) -> Aggregate:
    """Every call of the scope once (a missed call that rang three managers counts once)."""
    stmt = _scoped(select(*_figures(with_callbacks)).select_from(_calls), s)
    if s.manager is not None:
        stmt = stmt.where(_involves(s.manager))
    return _aggregate("team", (await conn.execute(stmt)).one(), with_callbacks)


async def grouped(conn: AsyncConnection, s: StatsScope, by: str) -> list[Aggregate]:
    """Per `tier` (of the call's client: calls without a client id are tier null), per
    `queue` (the first queue the call waited in) or per `pbx`."""
    if by == "tier":
        key = _clients.c.tier
        src = _calls.outerjoin(_clients, _clients.c.id == c.client_id)
    elif by == "queue":
        key, src = c.queue, _calls
    elif by == "pbx":
        key, src = c.pbx, _calls
    else:
        raise ValueError(by)
    stmt = _scoped(select(key, *_figures(True)).select_from(src), s).group_by(key)
    if s.manager is not None:
        stmt = stmt.where(_involves(s.manager))
    rows = await conn.execute(stmt)
    return sorted((_aggregate(r[0], r[1:], True) for r in rows), key=lambda a: (a.key is None, a.key or ""))


def _bucket(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "sqlite":
        # SQLite keeps UTC text ('YYYY-MM-DD HH:MM:SS.ffffff'): strftime('%s') is its epoch
        return cast(cast(func.strftime("%s", c.started_at), Integer) / BUCKET_SECONDS, Integer)
    return cast(func.floor(func.extract("epoch", c.started_at) / BUCKET_SECONDS), BigInteger)


async def buckets(conn: AsyncConnection, s: StatsScope) -> list[tuple[int, Counts]]:
    """(15-minute UTC bucket, counts): folded into hours of day and days by `periods`."""
    b = _bucket(conn).label("b")
    stmt = _scoped(select(b, _n(_IN), _n(_OUT), _n(_ANS), _n(_IN & (c.outcome == "missed")),
                          _n(_IN & (c.outcome == "abandoned"))).select_from(_calls), s)
    if s.manager is not None:
        stmt = stmt.where(_involves(s.manager))
    rows = await conn.execute(stmt.group_by(b))
    return [(int(r[0]), Counts(*(int(x) for x in r[1:]))) for r in rows]


async def _answered_part(conn: AsyncConnection, s: StatsScope, who: str | None) -> dict[str, list[Any]]:
    """Inbound answered (for answered_by) and outbound (for final_agent), per manager."""
    mgr = case((_OUT, c.final_agent), else_=c.answered_by).label("mgr")
    a = _scoped(select(mgr, *_figures(False)).select_from(_calls), StatsScope(s.period, pbx=s.pbx))
    a = a.where(or_(_OUT, _IN & _ANS))
    if who is not None:
        a = a.where(or_(and_(_OUT, c.final_agent == who), and_(_IN, c.answered_by == who)))
    else:
        a = a.where(mgr.is_not(None))
    # inbound here = answered (the filter above); the last two: callbacks (none here)
    return {r[0]: list(r[1:]) + [0, 0] for r in await conn.execute(a.group_by(mgr))}


async def _by_manager_and_team(conn: AsyncConnection, s: StatsScope) -> tuple[dict[str, list[Any]], Aggregate]:
    """The whole team's table in one scan of the period: grouped by (direction, outcome,
    the manager a call counts for — NULL: an inbound call nobody answered), with plain
    counts and sums per group; the figures are folded from the groups here (a few
    thousand rows), so the database evaluates no condition per call. The groups with a
    manager are `_answered_part`'s rows, all the groups summed are the team (callbacks
    aside)."""
    mgr = case((_OUT, c.final_agent), (_IN & _ANS, c.answered_by), else_=null()).label("mgr")
    stmt = _scoped(select(c.direction, c.outcome, mgr, func.count(), func.sum(c.ring_seconds), func.count(c.ring_seconds),
                          func.sum(c.talk_seconds), func.count(c.talk_seconds)).select_from(_calls),
                   StatsScope(s.period, pbx=s.pbx)).group_by(c.direction, c.outcome, mgr)
    if conn.dialect.name == "postgresql":
        # PostgreSQL guesses tens of thousands of groups (the CASE hides how few
        # managers there are) and would sort the period's calls by text; hashed, the
        # groups are a few hundred (a month, 82,360 calls: sort and group 85 ms, hashed 13 ms)
        await conn.execute(text("SET LOCAL work_mem = '32MB'"))
    groups: dict[str | None, list[Any]] = {}
    total = [0] * 10
    for direction, outcome, who, n, ring, rings, talk, talks in await conn.execute(stmt):
        v = _fold(direction, outcome, int(n), float(ring or 0.0), int(rings), float(talk or 0.0), int(talks))
        acc = groups.setdefault(who, [0] * 10)
        for i, x in enumerate(v):
            acc[i] += x
            total[i] += x
    return ({k: v + [0, 0] for k, v in groups.items() if k is not None}, _aggregate("team", total, False))


def _fold(direction: str, outcome: str, n: int, ring: float, rings: int, talk: float, talks: int) -> list[Any]:
    """`_figures(False)` of a group of calls that share direction and outcome."""
    inbound, outbound, answered = direction == "in", direction == "out", outcome == "answered"
    return [n if inbound else 0, n if inbound and answered else 0, n if inbound and outcome == "missed" else 0,
            n if inbound and outcome == "abandoned" else 0, n if outbound else 0, n if outbound and answered else 0,
            ring if inbound and answered else 0.0, rings if inbound and answered else 0,
            talk if answered else 0.0, talks if answered else 0]


async def _unanswered_part(conn: AsyncConnection, s: StatsScope, who: str | None
                           ) -> tuple[list[tuple], tuple]:
    """Inbound nobody answered, for every manager it rang (once per call and manager):
    (agent, calls, missed, abandoned, called back, not called back); and the same figures
    over every such call once (the team's: called back and not)."""
    # the called-back check runs once per call, in a subquery kept apart by OFFSET (else
    # PostgreSQL pulls it up and evaluates the EXISTS once per leg)
    # called back: the keys' latest answered calls, outer-joined (a hash join over
    # last_answered where the period has many missed calls, probes where it has few)
    lc, ln = _last.alias("lc"), _last.alias("ln")
    later = or_(func.coalesce(lc.c.started_at > c.started_at, False),
                func.coalesce(ln.c.started_at > c.started_at, False))
    src = (_calls.outerjoin(lc, and_(lc.c.kind == "client", lc.c.key == c.client_id))
           .outerjoin(ln, and_(ln.c.kind == "number", ln.c.key == c.peer_number)))
    unanswered = _scoped(select(c.id, c.outcome, case((_MISS, later), else_=False).label("cb"))
                         .select_from(src), StatsScope(s.period, pbx=s.pbx))
    unanswered = unanswered.where(_IN, c.outcome != "answered")
    if who is not None:
        # from the manager's legs (indexed by agent), not from every call of the period
        unanswered = unanswered.where(c.id.in_(select(_legs.c.call_id).where(_legs.c.agent == who)))
    # a CTE read twice (legs below, the team's callbacks at the end): PostgreSQL
    # materializes it, so the EXISTS runs once per call, not once per leg
    u = unanswered.cte("u")
    on = [_legs.c.call_id == u.c.id, _legs.c.agent.is_not(None)] + ([_legs.c.agent == who] if who else [])
    if conn.dialect.name == "postgresql":
        # LATERAL (kept apart by OFFSET): a few thousand primary-key probes into
        # call_legs; a plain join gets a hash join over every leg ever stored (measured)
        # (DISTINCT inside: a call that rang a manager twice is theirs once, without
        # sorting every (manager, call) pair of the period)
        lat = select(_legs.c.agent).where(*on).distinct().offset(0).lateral("l")
        rang = select(lat.c.agent, u.c.id, u.c.outcome, u.c.cb).select_from(u.join(lat, true()))
    else:
        rang = (select(_legs.c.agent.label("agent"), u.c.id, u.c.outcome, u.c.cb).distinct()
                .select_from(u.join(_legs, and_(*on))))
    r_ = rang.subquery()
    miss = r_.c.outcome.in_(UNANSWERED_MISSES)
    b = select(r_.c.agent, func.count(), _n(r_.c.outcome == "missed"), _n(r_.c.outcome == "abandoned"),
               _n(miss & (r_.c.cb == True)), _n(miss & (r_.c.cb == False))).group_by(r_.c.agent)  # noqa: E712
    # the team's row: every such call once, rang anyone or no one (agent NULL marks it)
    umiss = u.c.outcome.in_(UNANSWERED_MISSES)
    whole = select(null().label("agent"), func.count(), _n(u.c.outcome == "missed"), _n(u.c.outcome == "abandoned"),
                   _n(umiss & (u.c.cb == True)), _n(umiss & (u.c.cb == False)))  # noqa: E712
    rows = [tuple(r) for r in await conn.execute(b.union_all(whole))]
    return [r for r in rows if r[0] is not None], next(r for r in rows if r[0] is None)


def _combine(s: StatsScope, who: str | None, figures: dict[str, list[Any]], unanswered: list[tuple],
             deals: dict[str, int]) -> list[Aggregate]:
    for agent, n, missed, abandoned, done, open_ in unanswered:
        v = figures.setdefault(agent, [0] * 12)
        v[0] += int(n)
        v[2] += int(missed)
        v[3] += int(abandoned)
        v[10] += int(done)
        v[11] += int(done) + int(open_)   # _aggregate's shape: done, then all misses
    names = set(figures) | set(deals) | (set(s.managers) if who is None else {who})
    return [Aggregate(**{**_asdict(_aggregate(ext, figures.get(ext, [0] * 12), True)), "deals": deals.get(ext, 0)})
            for ext in sorted(names)]


async def per_manager(conn: AsyncConnection, s: StatsScope, deal_days: tuple[date, date]) -> list[Aggregate]:
    """One row per manager (see the module docstring for what counts for whom)."""
    who = s.manager or s.visible_to
    unanswered, _ = await _unanswered_part(conn, s, who)
    return _combine(s, who, await _answered_part(conn, s, who), unanswered,
                    await deal_totals(conn, deal_days[0], deal_days[1], who))


async def manager_table(engine: AsyncEngine, s: StatsScope, deal_days: tuple[date, date]
                        ) -> tuple[list[Aggregate], Aggregate]:
    """`per_manager` and `team` at once: their three statements run concurrently, each on
    its own pooled connection (the answer waits for the slowest, not for the sum)."""
    who = s.manager or s.visible_to
    if who is None:
        # everyone: the answered half and the team's counts from one scan of the period
        (answered, whole), (unanswered, missed), deals = await asyncio.gather(
            run(engine, _by_manager_and_team, s), run(engine, _unanswered_part, s, who),
            run(engine, deal_totals, deal_days[0], deal_days[1], who))
    else:
        answered, (unanswered, missed), deals, whole = await asyncio.gather(
            run(engine, _answered_part, s, who), run(engine, _unanswered_part, s, who),
            run(engine, deal_totals, deal_days[0], deal_days[1], who), run(engine, team, s, False))
    # the team's callbacks come from the unanswered half, which checks each missed call
    # anyway: the called-back EXISTS runs once per call for the whole table
    _, _, _, _, done, open_ = missed
    whole = Aggregate(**{**_asdict(whole), "callbacks_done": int(done), "callbacks_open": int(open_)})
    return _combine(s, who, answered, unanswered, deals), whole


def _asdict(a: Aggregate) -> dict[str, Any]:
    return {k: getattr(a, k) for k in a.__slots__}


async def deal_totals(conn: AsyncConnection, first: date, last: date, extension: str | None = None) -> dict[str, int]:
    stmt = (select(_deals.c.extension, func.sum(_deals.c.deals))
            .where(_deals.c.day >= first, _deals.c.day <= last).group_by(_deals.c.extension))
    if extension is not None:
        stmt = stmt.where(_deals.c.extension == extension)
    return {ext: int(n or 0) for ext, n in await conn.execute(stmt)}


async def manager_list(conn: AsyncConnection) -> list[str]:
    return list((await conn.scalars(select(_managers.c.extension).order_by(_managers.c.extension))).all())


async def not_contacted(conn: AsyncConnection, *, days: int, now: datetime, owner: str | None = None,
                        after: str | None = None, limit: int = 1000) -> list[NotContacted]:
    """Clients with no answered call either way since `now - days` (never called: last
    contact None), by client id; `owner` limits to one manager's clients."""
    cutoff = now - timedelta(days=days)
    cl = _clients.c
    # the latest answered call by client id, and by any of the client's phones
    by_id = _last.alias("lc")
    ln = _last.alias("ln")
    p = _phones.alias("p")
    by_phone = (select(p.c.client_id, func.max(ln.c.started_at).label("t"))
                .select_from(p.join(ln, and_(ln.c.kind == "number", ln.c.key == p.c.phone))))
    if owner is not None:
        by_phone = by_phone.where(p.c.client_id.in_(select(cl.id).where(cl.owner_extension == owner)))
    by_phone = by_phone.group_by(p.c.client_id).subquery("lp")
    stmt = (select(cl.id, cl.name, cl.owner_extension, cl.tier, by_id.c.started_at, by_phone.c.t)
            .select_from(_clients.outerjoin(by_id, and_(by_id.c.kind == "client", by_id.c.key == cl.id))
                         .outerjoin(by_phone, by_phone.c.client_id == cl.id))
            .where(or_(by_id.c.started_at.is_(None), by_id.c.started_at < cutoff),
                   or_(by_phone.c.t.is_(None), by_phone.c.t < cutoff))
            .order_by(cl.id).limit(limit))
    if owner is not None:
        stmt = stmt.where(cl.owner_extension == owner)
    if after is not None:
        stmt = stmt.where(cl.id > after)
    out = []
    for cid, name, own, tier, a, b in await conn.execute(stmt):
        last = max((_aware(t) for t in (a, b) if t is not None), default=None)
        out.append(NotContacted(cid, name, own, tier, last))
    return out


def _aware(t: Any) -> datetime:
    # a max() over a SQLite column comes back as text or naive: UTC by the store's rule
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


async def not_called_back(conn: AsyncConnection, s: StatsScope, *, before: int | None = None,
                          limit: int = 100) -> list[tuple[int, CallRecord]]:
    """Missed and abandoned inbound calls of the scope with no later answered call with
    the same client, newest stored first (row id keyset, like the call list)."""
    stmt = _scoped(select(c.id, c.record), s).where(_IN, _MISS, ~called_back())
    if s.manager is not None:
        stmt = stmt.where(_involves(s.manager))
    if before is not None:
        stmt = stmt.where(c.id < before)
    rows = await conn.execute(stmt.order_by(c.id.desc()).limit(limit))
    return [(r.id, CallRecord.model_validate(r.record)) for r in rows]


# ------------------------------------------------------------------ engine-level entry points
async def run(engine: AsyncEngine, fn: Any, *args: Any, **kw: Any) -> Any:
    """One read-only connection for one query function of this module."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # the estimates of these aggregates pass jit_above_cost, and compiling them
            # costs more (~85 ms measured) than the milliseconds it could save
            await conn.execute(text("SET LOCAL jit = off"))
        return await fn(conn, *args, **kw)


__all__ = ["Aggregate", "NotContacted", "StatsScope", "team", "grouped", "buckets", "per_manager", "deal_totals",
           "manager_table", "not_contacted", "not_called_back", "manager_list", "run"]
