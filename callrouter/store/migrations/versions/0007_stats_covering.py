"""statistics: covering indexes, so a period's figures are read from indexes alone

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

Measured on 1,000,000 calls (tests/bench/stats.py, README "Supervisors"): a month's
aggregates read every call row of the month from the heap, where each row carries its
whole record (~650 bytes); the same columns in the index make it an index-only scan.

- `ix_calls_started_at` (PostgreSQL): INCLUDE the columns the statistics read, so the
  period's aggregates, the team's figures and the not-contacted list's recent-call check
  are index-only scans. SQLite has no INCLUDE: unchanged there.
- `ix_calls_unanswered_in` (PostgreSQL): INCLUDE what the missed-call half reads (id,
  pbx, outcome, client_id, peer_number).
- `call_legs`: `(agent, call_id)` instead of `(agent)` (a manager's legs → their calls
  without visiting the legs' rows), and `(call_id, agent)` (the managers a call rang,
  without visiting them either).
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# kept equal to callrouter/store/schema.py (tests/test_store.py compares them)
STARTED_AT_INCLUDE = ["id", "pbx", "direction", "outcome", "answered_by", "final_agent", "ring_seconds",
                      "talk_seconds", "client_id", "peer_number", "queue"]
UNANSWERED_IN_INCLUDE = ["id", "pbx", "outcome", "client_id", "peer_number"]
_UNANSWERED_IN = sa.text("direction = 'in' AND outcome <> 'answered'")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_calls_started_at", table_name="calls")
        op.create_index("ix_calls_started_at", "calls", ["started_at"], postgresql_include=STARTED_AT_INCLUDE)
        op.drop_index("ix_calls_unanswered_in", table_name="calls")
        op.create_index("ix_calls_unanswered_in", "calls", ["started_at"], postgresql_where=_UNANSWERED_IN,
                        postgresql_include=UNANSWERED_IN_INCLUDE)
    op.drop_index("ix_call_legs_agent", table_name="call_legs")
    op.create_index("ix_call_legs_agent_call_id", "call_legs", ["agent", "call_id"])
    op.create_index("ix_call_legs_call_id_agent", "call_legs", ["call_id", "agent"])


def downgrade() -> None:
    op.drop_index("ix_call_legs_call_id_agent", table_name="call_legs")
    op.drop_index("ix_call_legs_agent_call_id", table_name="call_legs")
    op.create_index("ix_call_legs_agent", "call_legs", ["agent"])
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_calls_unanswered_in", table_name="calls")
        op.create_index("ix_calls_unanswered_in", "calls", ["started_at"], postgresql_where=_UNANSWERED_IN)
        op.drop_index("ix_calls_started_at", table_name="calls")
        op.create_index("ix_calls_started_at", "calls", ["started_at"])
