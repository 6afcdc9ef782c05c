"""Tables of the store (SQLAlchemy 2 declarative).

This module describes the schema for queries and for Alembic autogenerate; the
database itself is created and changed only by the migrations in
`callrouter/store/migrations/versions/` (never `metadata.create_all` in production).
The same definitions run on SQLite (embedded default) and PostgreSQL (production).
"""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints so migrations can refer to (and later alter) them by name on both
# backends; SQLite batch mode needs names too.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, always UTC in the database.

    PostgreSQL keeps `timestamptz`; SQLite has no timezone type and returns naive
    values, so we store UTC and re-attach UTC on the way out. Naive input is taken as
    UTC (the tracker produces aware datetimes; this is only a guard)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC) if dialect.name != "sqlite" else value
        value = value.astimezone(UTC)
        # SQLite would otherwise store the offset text and break lexical ordering
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# BIGINT on PostgreSQL (calls accumulate for years); SQLite only autoincrements an
# "INTEGER PRIMARY KEY" (the rowid alias), which is 64-bit there anyway.
BigId = BigInteger().with_variant(Integer, "sqlite")

# JSONB on PostgreSQL (indexable, compact); plain JSON text on SQLite.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonDoc}


class Manager(Base):
    __tablename__ = "managers"

    extension: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str | None] = mapped_column(String)
    dnd: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ManagerDevice(Base):
    __tablename__ = "manager_devices"

    device: Mapped[str] = mapped_column(String, primary_key=True)
    extension: Mapped[str] = mapped_column(
        String, ForeignKey("managers.extension", ondelete="CASCADE"), index=True)


class ClientRow(Base):
    __tablename__ = "clients"
    # SQLite: a clustered table (no separate rowid B-tree next to the PK index) halves
    # the index work of a million-client import. Ignored by PostgreSQL.
    __table_args__ = {"sqlite_with_rowid": False}

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    owner_extension: Mapped[str | None] = mapped_column(String)
    # asdecimal=False: the API speaks float, and SQLite has no native decimal anyway
    monthly_turnover: Mapped[float | None] = mapped_column(Numeric(18, 2, asdecimal=False))
    tier: Mapped[str | None] = mapped_column(String)
    problem: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ClientPhone(Base):
    __tablename__ = "client_phones"
    __table_args__ = {"sqlite_with_rowid": False}  # see ClientRow

    # PK (client_id, phone): a client lists a phone once; the same phone on two clients
    # is allowed on purpose, so lookups can see (and routing can report) the ambiguity.
    client_id: Mapped[str] = mapped_column(
        String, ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    phone: Mapped[str] = mapped_column(String, primary_key=True, index=True)
    raw: Mapped[str | None] = mapped_column(String)


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("pbx", "call_id"),
        # supervisors' statistics (store/stats.py, migration 0006): one manager's calls in
        # a period, and a client's last answered call (by id, or by number either way)
        Index("ix_calls_answered_by_started_at", "answered_by", "started_at"),
        Index("ix_calls_final_agent_started_at", "final_agent", "started_at"),
        Index("ix_calls_client_id_answered", "client_id", "started_at",
              postgresql_where=text("outcome = 'answered'"), sqlite_where=text("outcome = 'answered'")),
        Index("ix_calls_peer_number_answered", "peer_number", "started_at",
              postgresql_where=text("outcome = 'answered'"), sqlite_where=text("outcome = 'answered'")),
        # inbound calls nobody answered (a sixth of them): missed-call lists and stats
        Index("ix_calls_unanswered_in", "started_at",
              postgresql_where=text("direction = 'in' AND outcome <> 'answered'"),
              sqlite_where=text("direction = 'in' AND outcome <> 'answered'"),
              postgresql_include=["id", "pbx", "outcome", "client_id", "peer_number"]),
        # a period's calls (migration 0007): on PostgreSQL the columns the statistics read
        # are in the index, so a month's aggregates never visit the rows (each holds its
        # whole record); SQLite has no INCLUDE
        Index("ix_calls_started_at", "started_at",
              postgresql_include=["id", "pbx", "direction", "outcome", "answered_by", "final_agent", "ring_seconds",
                                  "talk_seconds", "client_id", "peer_number", "queue"]),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pbx: Mapped[str] = mapped_column(String)
    call_id: Mapped[str] = mapped_column(String)
    direction: Mapped[str] = mapped_column(String)
    caller_number: Mapped[str | None] = mapped_column(String, index=True)
    caller_raw: Mapped[str | None] = mapped_column(String)
    caller_name: Mapped[str | None] = mapped_column(String)
    callee_number: Mapped[str | None] = mapped_column(String)
    callee_raw: Mapped[str | None] = mapped_column(String)
    callee_name: Mapped[str | None] = mapped_column(String)
    client_id: Mapped[str | None] = mapped_column(String, index=True)
    started_at: Mapped[datetime | None]  # indexed above (ix_calls_started_at)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    ring_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String)
    hangup_by: Mapped[str | None] = mapped_column(String)
    answered_by: Mapped[str | None] = mapped_column(String, index=True)
    final_agent: Mapped[str | None] = mapped_column(String, index=True)
    queue: Mapped[str | None] = mapped_column(String)
    recording: Mapped[str | None] = mapped_column(String)
    # the outside party's E.164 number (inbound: caller, outbound: callee), for finding a
    # client's calls in either direction (outbound calls carry no client_id); migration 0006
    peer_number: Mapped[str | None] = mapped_column(String)
    complete: Mapped[bool] = mapped_column(Boolean)
    route_rule: Mapped[str | None] = mapped_column(String)
    route_reason: Mapped[str | None] = mapped_column(String)
    route_dial: Mapped[str | None] = mapped_column(String)
    route_latency_ms: Mapped[float | None] = mapped_column(Float)
    # the whole CallRecord.to_dict(): the columns above are for queries, this is the truth
    record: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class CallLeg(Base):
    __tablename__ = "call_legs"
    # a manager's legs → their calls, and a call → the managers it rang, from the indexes
    # alone (statistics; migration 0007)
    __table_args__ = (Index("ix_call_legs_agent_call_id", "agent", "call_id"),
                      Index("ix_call_legs_call_id_agent", "call_id", "agent"))

    # legs are replaced wholesale with their call, so (call, position) is the identity
    call_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # index in CallRecord.legs
    agent: Mapped[str | None] = mapped_column(String)
    device: Mapped[str] = mapped_column(String)
    ring_seconds: Mapped[float | None] = mapped_column(Float)
    result: Mapped[str] = mapped_column(String)
    queue: Mapped[str | None] = mapped_column(String)


class RouteDecisionRow(Base):
    """One FastAGI routing answer (`callrouter.routing.decision.RoutedCall`, mapped by
    `store.routing`), with the trace of the rules that produced it."""
    __tablename__ = "route_decisions"
    # one FastAGI answer: the channel that ran AGI() and when it was answered (migration
    # 0002 says why); inserts are ON CONFLICT DO NOTHING on it, so a replay is a no-op
    __table_args__ = (Index(None, "pbx", "linkedid"),
                      Index("uq_route_decisions_pbx_uniqueid_decided_at", "pbx", "uniqueid", "decided_at",
                            unique=True))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pbx: Mapped[str] = mapped_column(String)
    linkedid: Mapped[str] = mapped_column(String)
    uniqueid: Mapped[str] = mapped_column(String, server_default="")
    decided_at: Mapped[datetime]
    caller_raw: Mapped[str | None] = mapped_column(String)
    caller_number: Mapped[str | None] = mapped_column(String)
    client_id: Mapped[str | None] = mapped_column(String)
    rule: Mapped[str | None] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(String)
    dial: Mapped[str | None] = mapped_column(String)
    timeout: Mapped[int | None] = mapped_column(Integer)
    fallback: Mapped[str | None] = mapped_column(String)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    trace: Mapped[dict[str, Any] | None]


class Lead(Base):
    __tablename__ = "leads"
    # one lead per unknown caller per PBX: a caller who rings back is the same lead
    __table_args__ = (UniqueConstraint("pbx", "phone"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pbx: Mapped[str] = mapped_column(String)
    phone: Mapped[str] = mapped_column(String)
    raw: Mapped[str | None] = mapped_column(String)
    call_id: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ApiUser(Base):
    """A REST API user (`callrouter users add`). Only a hash of the token is kept; the
    token's public `token_id` part finds the row without scanning every hash."""
    __tablename__ = "api_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    role: Mapped[str] = mapped_column(String)
    extension: Mapped[str | None] = mapped_column(String)
    token_id: Mapped[str] = mapped_column(String, unique=True)
    token_hash: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]
class DeadLetter(Base):
    """An item the database refused twice (in its batch, then alone): kept with the error
    for an admin (`callrouter deadletters list`). `payload` is the item as ASCII-only JSON,
    so the value that was refused (a NUL, a lone surrogate) can be stored here."""
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String)      # record | decision | webhook (the CRM refused it)
    key: Mapped[str] = mapped_column(String)       # pbx/call_id, pbx/uniqueid@decided_at
    error: Mapped[str] = mapped_column(String)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


metadata = Base.metadata


class ClientChange(Base):
    """One client touched (upserted, phones changed, deleted), written by database
    triggers (migration 0004) whoever the writer is: the change feed every daemon
    follows (`callrouter.store.changes`), pruned by the followers after a few minutes."""
    __tablename__ = "client_changes"
    # SQLite: AUTOINCREMENT, so a seq is never reused after the table is pruned empty
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class CallbackRow(Base):
    """A callback task (migration 0005): opened by a missed or abandoned inbound call from
    a known client, for its owner (or the desk queue); closed by the next answered call
    with that client either way (`closed_by_call`) or by hand (`closed_by`, a user)."""
    __tablename__ = "callbacks"
    __table_args__ = (UniqueConstraint("pbx", "call_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pbx: Mapped[str] = mapped_column(String)
    call_id: Mapped[str] = mapped_column(String)
    client_id: Mapped[str] = mapped_column(String, index=True)
    assignee: Mapped[str] = mapped_column(String, index=True)
    assignee_kind: Mapped[str] = mapped_column(String)     # owner | queue
    reason: Mapped[str] = mapped_column(String)            # the opening call's outcome
    caller_number: Mapped[str | None] = mapped_column(String)
    call_started_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    closed_at: Mapped[datetime | None]
    closed_by_call: Mapped[str | None] = mapped_column(String)
    closed_by: Mapped[str | None] = mapped_column(String)


class DealCount(Base):
    """Deals a manager closed on a day (the PBX's calendar), pushed by the CRM
    (PUT /api/deals, idempotent: the last push for a manager and day wins). Migration 0006."""
    __tablename__ = "deals"

    extension: Mapped[str] = mapped_column(String, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    deals: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class LastAnswered(Base):
    """The latest answered call with a client (`kind` "client": by client_id) or with an
    outside number (`kind` "number": by peer_number), either direction; derived from
    `calls` and kept by the call writer in the same transaction (store/calls.py), so that
    "called back" and "not contacted" read one row instead of searching the calls.
    Migration 0008."""
    __tablename__ = "last_answered"

    kind: Mapped[str] = mapped_column(String, primary_key=True)
    key: Mapped[str] = mapped_column(String, primary_key=True)
    started_at: Mapped[datetime]


class Target(Base):
    """A manager's targets for a month (`month` = its first day), set by a supervisor."""
    __tablename__ = "targets"

    extension: Mapped[str] = mapped_column(String, primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    calls: Mapped[int | None] = mapped_column(Integer)
    talk_minutes: Mapped[int | None] = mapped_column(Integer)
    deals: Mapped[int | None] = mapped_column(Integer)
    set_by: Mapped[str | None] = mapped_column(String)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class RecordingAccess(Base):
    """One listen or download of a call's recording: who, which call, when, from where."""
    __tablename__ = "recording_access"
    __table_args__ = (Index(None, "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    user_name: Mapped[str] = mapped_column(String)
    role: Mapped[str] = mapped_column(String)
    pbx: Mapped[str] = mapped_column(String)
    call_id: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)        # listen | download
    remote: Mapped[str | None] = mapped_column(String)  # the peer address (or the proxy's)
    range: Mapped[str | None] = mapped_column(String)   # the Range header, when one was sent
