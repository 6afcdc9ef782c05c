"""initial schema: managers, clients, calls, route decisions, leads

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written against plain SQLAlchemy types (not callrouter.store.schema), so later
changes to the models cannot silently rewrite history. Runs on SQLite and PostgreSQL.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: rowid alias
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True, now: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable,
                     server_default=sa.func.now() if now else None)


def _flag(name: str) -> sa.Column:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def _str(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "managers",
        _str("extension", nullable=False),
        _str("name"),
        _flag("dnd"),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("extension", name=op.f("pk_managers")),
    )
    op.create_table(
        "manager_devices",
        _str("device", nullable=False),
        _str("extension", nullable=False),
        sa.ForeignKeyConstraint(["extension"], ["managers.extension"], ondelete="CASCADE",
                                name=op.f("fk_manager_devices_extension_managers")),
        sa.PrimaryKeyConstraint("device", name=op.f("pk_manager_devices")),
    )
    op.create_index(op.f("ix_manager_devices_extension"), "manager_devices", ["extension"])

    op.create_table(
        "clients",
        _str("id", nullable=False),
        _str("name", nullable=False),
        _str("owner_extension"),
        sa.Column("monthly_turnover", sa.Numeric(18, 2), nullable=True),
        _str("tier"),
        _flag("problem"),
        _flag("blocked"),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clients")),
        sqlite_with_rowid=False,  # SQLite: clustered on the PK, cheaper bulk imports
    )
    op.create_table(
        "client_phones",
        _str("client_id", nullable=False),
        _str("phone", nullable=False),
        _str("raw"),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], ondelete="CASCADE",
                                name=op.f("fk_client_phones_client_id_clients")),
        sa.PrimaryKeyConstraint("client_id", "phone", name=op.f("pk_client_phones")),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_client_phones_phone"), "client_phones", ["phone"])

    op.create_table(
        "calls",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        _str("pbx", nullable=False),
        _str("call_id", nullable=False),
        _str("direction", nullable=False),
        _str("caller_number"), _str("caller_raw"), _str("caller_name"),
        _str("callee_number"), _str("callee_raw"), _str("callee_name"),
        _str("client_id"),
        _ts("started_at"), _ts("answered_at"), _ts("ended_at"),
        sa.Column("ring_seconds", sa.Float(), nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        _str("outcome", nullable=False),
        _str("hangup_by"), _str("answered_by"), _str("final_agent"), _str("queue"),
        _str("recording"),
        sa.Column("complete", sa.Boolean(), nullable=False),
        _str("route_rule"), _str("route_reason"), _str("route_dial"),
        sa.Column("route_latency_ms", sa.Float(), nullable=True),
        sa.Column("record", Json, nullable=False),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint("pbx", "call_id", name=op.f("uq_calls_pbx_call_id")),
    )
    for col in ("started_at", "answered_by", "final_agent", "client_id", "caller_number"):
        op.create_index(op.f(f"ix_calls_{col}"), "calls", [col])

    op.create_table(
        "call_legs",
        sa.Column("call_id", BigId, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _str("agent"),
        _str("device", nullable=False),
        sa.Column("ring_seconds", sa.Float(), nullable=True),
        _str("result", nullable=False),
        _str("queue"),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE",
                                name=op.f("fk_call_legs_call_id_calls")),
        sa.PrimaryKeyConstraint("call_id", "seq", name=op.f("pk_call_legs")),
    )
    op.create_index(op.f("ix_call_legs_agent"), "call_legs", ["agent"])

    op.create_table(
        "route_decisions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        _str("pbx", nullable=False),
        _str("linkedid", nullable=False),
        _ts("decided_at", nullable=False),
        _str("caller_raw"), _str("caller_number"), _str("client_id"),
        _str("rule"), _str("reason"), _str("dial"),
        sa.Column("timeout", sa.Integer(), nullable=True),
        _str("fallback"),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("trace", Json, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_decisions")),
    )
    op.create_index(op.f("ix_route_decisions_pbx_linkedid"), "route_decisions", ["pbx", "linkedid"])

    op.create_table(
        "leads",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        _str("pbx", nullable=False),
        _str("phone", nullable=False),
        _str("raw"),
        _str("call_id"),
        _ts("created_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        sa.UniqueConstraint("pbx", "phone", name=op.f("uq_leads_pbx_phone")),
    )


def downgrade() -> None:
    for table in ("leads", "route_decisions", "call_legs", "calls", "client_phones",
                  "clients", "manager_devices", "managers"):
        op.drop_table(table)  # indexes go with their table on both backends
