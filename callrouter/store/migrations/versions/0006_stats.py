"""supervisors: statistics indexes, calls.peer_number, deals, targets, recording audit

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

- `calls.peer_number`: the outside party's E.164 number in either direction (inbound:
  caller, outbound: callee), backfilled from the existing columns; outbound calls carry no
  client_id, so a client's outbound calls are found by number.
- indexes for one manager's calls in a period and a client's latest answered call.
- `deals` (CRM-pushed deal counts per manager and day), `targets` (per manager and month),
  `recording_access` (the audit of every listen and download).
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ANSWERED = sa.text("outcome = 'answered'")
_UNANSWERED_IN = sa.text("direction = 'in' AND outcome <> 'answered'")


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("peer_number", sa.String(), nullable=True))
    op.execute("UPDATE calls SET peer_number = CASE direction WHEN 'in' THEN caller_number "
               "WHEN 'out' THEN callee_number END")
    op.create_index("ix_calls_answered_by_started_at", "calls", ["answered_by", "started_at"])
    op.create_index("ix_calls_final_agent_started_at", "calls", ["final_agent", "started_at"])
    op.create_index("ix_calls_client_id_answered", "calls", ["client_id", "started_at"],
                    postgresql_where=_ANSWERED, sqlite_where=_ANSWERED)
    op.create_index("ix_calls_peer_number_answered", "calls", ["peer_number", "started_at"],
                    postgresql_where=_ANSWERED, sqlite_where=_ANSWERED)
    op.create_index("ix_calls_unanswered_in", "calls", ["started_at"], postgresql_where=_UNANSWERED_IN,
                    sqlite_where=_UNANSWERED_IN)
    op.create_table(
        "deals",
        sa.Column("extension", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("deals", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("extension", "day", name=op.f("pk_deals")),
    )
    op.create_table(
        "targets",
        sa.Column("extension", sa.String(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=True),
        sa.Column("talk_minutes", sa.Integer(), nullable=True),
        sa.Column("deals", sa.Integer(), nullable=True),
        sa.Column("set_by", sa.String(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("extension", "month", name=op.f("pk_targets")),
    )
    op.create_table(
        "recording_access",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("pbx", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("remote", sa.String(), nullable=True),
        sa.Column("range", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_access")),
    )
    op.create_index(op.f("ix_recording_access_at"), "recording_access", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_recording_access_at"), table_name="recording_access")
    op.drop_table("recording_access")
    op.drop_table("targets")
    op.drop_table("deals")
    for name in ("ix_calls_unanswered_in", "ix_calls_peer_number_answered", "ix_calls_client_id_answered",
                 "ix_calls_final_agent_started_at", "ix_calls_answered_by_started_at"):
        op.drop_index(name, table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("peer_number")
