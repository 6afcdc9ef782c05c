"""callbacks: a missed or abandoned call from a known client, until answered

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

One row per call that opened it: UNIQUE (pbx, call_id), so a replayed record (the spool,
a restart, a second write of the same call) never opens two. Closed by the next answered
call with the client, either way (`closed_by_call`), or by hand (`closed_by`).
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: rowid alias


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("pbx", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("assignee", sa.String(), nullable=False),
        sa.Column("assignee_kind", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("caller_number", sa.String(), nullable=True),
        sa.Column("call_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by_call", sa.String(), nullable=True),
        sa.Column("closed_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
        sa.UniqueConstraint("pbx", "call_id", name=op.f("uq_callbacks_pbx_call_id")),
    )
    op.create_index(op.f("ix_callbacks_client_id"), "callbacks", ["client_id"])
    op.create_index(op.f("ix_callbacks_assignee"), "callbacks", ["assignee"])


def downgrade() -> None:
    op.drop_index(op.f("ix_callbacks_assignee"), table_name="callbacks")
    op.drop_index(op.f("ix_callbacks_client_id"), table_name="callbacks")
    op.drop_table("callbacks")
