"""statistics: the latest answered call per client and per outside number

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

`last_answered (kind, key, started_at)`: kind "client" keyed by calls.client_id, kind
"number" keyed by calls.peer_number; started_at = the latest started_at of an answered
call with that key, either direction. Derived data: the call writer keeps it in the
transaction that writes the calls (store/calls.py), and this migration fills it from the
calls already stored. "Called back" (a later answered call with the same client or
number) is then `last_answered.started_at > the missed call's started_at`, and the
not-contacted list reads one row per client and phone instead of searching the calls.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "last_answered",
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_last_answered")),
    )
    # the same statement as callrouter.store.calls.REBUILD_LAST_ANSWERED (kept inline:
    # a migration must not change when the package does)
    for kind, col in (("client", "client_id"), ("number", "peer_number")):
        op.execute(f"INSERT INTO last_answered (kind, key, started_at) SELECT '{kind}', {col}, max(started_at) "
                   f"FROM calls WHERE outcome = 'answered' AND {col} IS NOT NULL AND started_at IS NOT NULL "
                   f"GROUP BY {col}")


def downgrade() -> None:
    op.drop_table("last_answered")
