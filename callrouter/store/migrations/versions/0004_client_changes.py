"""client change feed: `client_changes`, filled by triggers on clients and client_phones

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Every daemon keeps clients in memory (the phone directory) and must see a change made by
another process (`callrouter import`, another daemon's REST API, an admin's SQL) within a
second. Triggers record the touched client ids whoever the writer is, deletes included:
- PostgreSQL: statement-level triggers with transition tables (one INSERT ... SELECT per
  statement, not one per row: a million-row import stays fast) that also `pg_notify` the
  followers listening on `callrouter_client_changes` (once per transaction: PostgreSQL
  folds identical notifications);
- SQLite: row-level triggers (the only kind it has; each is a cheap in-C insert).
A row that an upsert leaves unchanged is not updated (`store/clients.py`), so it fires
nothing: importing the same file twice produces no changes.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

CHANNEL = "callrouter_client_changes"  # = callrouter.store.changes.CHANNEL

# (table, the column naming the client)
_SOURCES = (("clients", "id"), ("client_phones", "client_id"))

_PG_FUNCTION = """
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO client_changes (client_id) SELECT DISTINCT {col} FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO client_changes (client_id)
            SELECT {col} FROM new_rows UNION SELECT {col} FROM old_rows;
    ELSE
        INSERT INTO client_changes (client_id) SELECT DISTINCT {col} FROM old_rows;
    END IF;
    IF FOUND THEN
        PERFORM pg_notify('{channel}', '');
    END IF;
    RETURN NULL;
END
$$
"""

# PostgreSQL allows transition tables only on single-event triggers: one per event
_PG_EVENTS = (("ins", "INSERT", "NEW TABLE AS new_rows"),
              ("upd", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
              ("del", "DELETE", "OLD TABLE AS old_rows"))

_SQLITE_EVENTS = (("ins", "INSERT", "INSERT INTO client_changes (client_id) VALUES (NEW.{col});"),
                  ("upd", "UPDATE", "INSERT INTO client_changes (client_id) VALUES (NEW.{col}); "
                                    "INSERT INTO client_changes (client_id) SELECT OLD.{col} "
                                    "WHERE OLD.{col} <> NEW.{col};"),
                  ("del", "DELETE", "INSERT INTO client_changes (client_id) VALUES (OLD.{col});"))


def _fn(table: str) -> str:
    return f"client_changes_from_{table}"


def upgrade() -> None:
    op.create_table(
        "client_changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_client_changes")),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name == "postgresql":
        for table, col in _SOURCES:
            op.execute(_PG_FUNCTION.format(fn=_fn(table), col=col, channel=CHANNEL))
            for suffix, event, referencing in _PG_EVENTS:
                op.execute(f"CREATE TRIGGER {table}_changes_{suffix} AFTER {event} ON {table} "
                           f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {_fn(table)}()")
    else:
        for table, col in _SOURCES:
            for suffix, event, body in _SQLITE_EVENTS:
                op.execute(f"CREATE TRIGGER {table}_changes_{suffix} AFTER {event} ON {table} "
                           f"FOR EACH ROW BEGIN {body.format(col=col)} END")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, _ in _SOURCES:
        for suffix, _, _ in _PG_EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_changes_{suffix}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {_fn(table)}()")
    op.drop_table("client_changes")
