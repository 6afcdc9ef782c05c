"""Dialect-specific INSERT, so one upsert statement serves SQLite and PostgreSQL."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect


def insert_for(dialect: Dialect, table: Table) -> Any:
    """`INSERT` supporting `.on_conflict_do_update/_do_nothing` for this dialect."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    if dialect.name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported dialect {dialect.name!r}")


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
