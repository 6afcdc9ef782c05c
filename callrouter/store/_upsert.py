"""Dialect-specific statements shared by the store modules."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, any_, bindparam, delete, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection


def insert_for(dialect: Dialect, table: Table) -> Any:
    """`INSERT` supporting `.on_conflict_do_update/_do_nothing` for this dialect."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    if dialect.name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported dialect {dialect.name!r}")


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class BulkUpsert:
    """INSERT (optionally ON CONFLICT DO UPDATE) of many rows given as tuples, the
    fastest way each backend offers, for the million-row paths (client import):

    - SQLite: a driver-level executemany (its loop runs in C). SQLAlchemy's per-row
      parameter processing would cost more than SQLite's own work.
    - PostgreSQL: one statement per batch, `INSERT ... SELECT FROM unnest(arrays)`;
      executemany there pays a protocol round of Bind/Execute per row.

    No SQLAlchemy type processors run on SQLite, so values must be plain str, int,
    float, bool or None."""

    def __init__(self, table: Table, columns: Sequence[str], *, conflict: Sequence[str] = (),
                 update: Sequence[str] = (), touch: str | None = None, if_changed: bool = False) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.conflict = tuple(conflict)
        self.update = tuple(update)
        self.touch = touch  # a timestamp column set to now() on update
        # update only rows whose `update` columns differ: an unchanged row keeps its
        # timestamp and fires no trigger (the client change feed stays quiet)
        self.if_changed = if_changed
        self._sqlite_sql: str | None = None
        self._pg_stmt: Any = None

    def _on_conflict(self, ins: Any) -> Any:
        if not self.conflict:
            return ins
        set_: dict[str, Any] = {c: ins.excluded[c] for c in self.update}
        if self.touch:
            set_[self.touch] = func.now()
        if not set_:
            return ins.on_conflict_do_nothing(index_elements=list(self.conflict))
        where = None
        if self.if_changed:
            where = or_(*(self.table.c[c].is_distinct_from(ins.excluded[c]) for c in self.update))
        return ins.on_conflict_do_update(index_elements=list(self.conflict), set_=set_, where=where)

    async def run(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if conn.dialect.name == "sqlite":
            if self._sqlite_sql is None:
                ins = sqlite.insert(self.table).values({c: bindparam(c) for c in self.columns})
                compiled = self._on_conflict(ins).compile(dialect=conn.dialect)
                assert tuple(compiled.positiontup or ()) == self.columns
                self._sqlite_sql = str(compiled)
            await conn.exec_driver_sql(self._sqlite_sql, rows)
        else:
            if self._pg_stmt is None:
                arrays = [bindparam(f"a_{c}", type_=postgresql.ARRAY(self.table.c[c].type))
                          for c in self.columns]
                src = func.unnest(*arrays).table_valued(*self.columns).render_derived()
                ins = postgresql.insert(self.table).from_select(list(self.columns), select(src))
                self._pg_stmt = self._on_conflict(ins)
            await conn.execute(self._pg_stmt, {f"a_{c}": list(col) for c, col in
                                               zip(self.columns, zip(*rows), strict=True)})


class BulkDelete:
    """DELETE rows whose `column` is any of many keys (see BulkUpsert for why)."""

    def __init__(self, table: Table, column: str) -> None:
        self.table = table
        self.column = column
        self._sqlite_sql: str | None = None
        self._pg_stmt: Any = None

    async def run(self, conn: AsyncConnection, keys: Sequence[Any]) -> None:
        if not keys:
            return
        col = self.table.c[self.column]
        if conn.dialect.name == "sqlite":
            if self._sqlite_sql is None:
                stmt = delete(self.table).where(col == bindparam("k"))
                self._sqlite_sql = str(stmt.compile(dialect=conn.dialect))
            await conn.exec_driver_sql(self._sqlite_sql, [(k,) for k in keys])
        else:
            if self._pg_stmt is None:
                self._pg_stmt = delete(self.table).where(
                    col == any_(bindparam("keys", type_=postgresql.ARRAY(col.type))))
            await conn.execute(self._pg_stmt, {"keys": list(keys)})


class BulkDeleteOthers:
    """DELETE the rows of many keys except the (key, value) pairs given: a child list
    (a client's phones) replaced by a new one without touching the rows that stay, so
    a re-import of the same list deletes and re-inserts nothing."""

    def __init__(self, table: Table, key: str, value: str) -> None:
        name, k, v = table.name, key, value  # trusted identifiers from our own schema
        self._sqlite_sql = (f"DELETE FROM {name} WHERE {k} = ? "
                            f"AND {v} NOT IN (SELECT value FROM json_each(?))")
        arr = postgresql.ARRAY(table.c[key].type)
        self._pg_stmt = text(
            f"DELETE FROM {name} AS t WHERE t.{k} = ANY(:keys) AND NOT EXISTS ("
            f"SELECT 1 FROM unnest(:pk, :pv) AS n(k, v) WHERE n.k = t.{k} AND n.v = t.{v})"
        ).bindparams(bindparam("keys", type_=arr), bindparam("pk", type_=arr),
                     bindparam("pv", type_=postgresql.ARRAY(table.c[value].type)))

    async def run(self, conn: AsyncConnection, keep: dict[Any, Sequence[Any]]) -> None:
        """`keep`: every key whose rows are replaced -> the values it keeps."""
        if not keep:
            return
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(self._sqlite_sql, [(k, json.dumps(list(vs))) for k, vs in keep.items()])
        else:
            pairs = [(k, v) for k, vs in keep.items() for v in vs]
            await conn.execute(self._pg_stmt, {"keys": list(keep), "pk": [p[0] for p in pairs],
                                               "pv": [p[1] for p in pairs]})
