"""REST API users: role, manager extension, hashed token

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Written against plain SQLAlchemy types (see 0001). Independent of 0002, so it can be
rebased onto it without changes.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: rowid alias


def upgrade() -> None:
    op.create_table(
        "api_users",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("extension", sa.String(), nullable=True),
        sa.Column("token_id", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_users")),
        sa.UniqueConstraint("name", name=op.f("uq_api_users_name")),
        sa.UniqueConstraint("token_id", name=op.f("uq_api_users_token_id")),
    )


def downgrade() -> None:
    op.drop_table("api_users")
