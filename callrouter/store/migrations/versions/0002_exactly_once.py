"""exactly once: a natural key for route decisions, and the dead-letter table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Decisions and leads may reach the store more than once: the decision log's child
acknowledges a batch after its commit (a child that dies in between has it resent), and
the spool (callrouter.store.spool) replays what it holds after a crash between a commit
and the spool's own delete. So every insert is `ON CONFLICT DO NOTHING` on a key that
names one thing in the world, and a replayed batch is a no-op:

- a route decision is one FastAGI answer: (pbx, uniqueid, decided_at). `uniqueid` is the
  Asterisk uniqueid of the channel that ran AGI(): one channel, one AGI connection at a
  time. `decided_at` (microseconds, set once by the server when it answered, carried
  unchanged through the pipe and the spool) tells apart two answers to the same channel
  (a dialplan that routes again after a failed Dial). The linkedid cannot be the key: it
  is shared by every channel of the call, and a transfer back into the inbound context
  routes the same linkedid again. The uniqueid was only in `trace`; it becomes a column,
  filled from `trace` for existing rows, and duplicates already stored (at-least-once
  delivery before this revision) are removed, the first row kept.
- a lead already has its key, (pbx, phone) since 0001 (`uq_leads_pbx_phone`): a caller
  who rings again, or a replayed batch, is the same lead.
- call records are keyed by (pbx, call_id) since 0001 and written as upserts.

`dead_letters` holds what the database refused twice (alone, after its batch was refused):
the kind, a short key, the error, and the item as JSON text with every non-ASCII
character escaped, so that the very value the database refused (a NUL, a lone surrogate)
can be stored there. `callrouter deadletters list` shows them.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("route_decisions", sa.Column("uniqueid", sa.String(), nullable=False, server_default=""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE route_decisions SET uniqueid = COALESCE(trace->>'uniqueid', '')")
    else:
        op.execute("UPDATE route_decisions SET uniqueid = COALESCE(json_extract(trace, '$.uniqueid'), '')")
    op.execute("DELETE FROM route_decisions WHERE id NOT IN "
               "(SELECT min(id) FROM route_decisions GROUP BY pbx, uniqueid, decided_at)")
    op.create_index("uq_route_decisions_pbx_uniqueid_decided_at", "route_decisions",
                    ["pbx", "uniqueid", "decided_at"], unique=True)

    op.create_table(
        "dead_letters",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_index("uq_route_decisions_pbx_uniqueid_decided_at", "route_decisions")
    with op.batch_alter_table("route_decisions") as batch:
        batch.drop_column("uniqueid")
